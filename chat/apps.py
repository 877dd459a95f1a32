from django.apps import AppConfig
from django.core import checks


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        from config.middleware import check_security_middleware

        checks.register(check_security_middleware, checks.Tags.security, deploy=True)
