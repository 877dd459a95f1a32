from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from chat.services import create_api_token


class Command(BaseCommand):
    help = "Create an API token for a user and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to tell tokens apart")

    def handle(self, *args, username: str, name: str, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {username!r}") from None
        if not user.is_active:
            raise CommandError(f"User {username!r} is deactivated")
        self.stdout.write(create_api_token(user, name=name))
