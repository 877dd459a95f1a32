import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from attachments.services import start_cleanup_schedule
from chat.services import recover_interrupted_messages
from integrations.services import ensure_housekeeping_server


class Command(BaseCommand):
    help = (
        "Run the product: apply migrations, make sure an admin exists, recover interrupted "
        "answers, then serve HTTP + WebSocket with uvicorn."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args, host: str, port: int, workers: int, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self._ensure_admin()
        ensure_housekeeping_server()  # the bundled MCP tools work with no extra step
        # One process owns every turn by default, so anything still `streaming` is from a crash.
        # With several processes (REDIS_URL), only answers silent for a minute are stale.
        older_than = timedelta(minutes=1) if settings.REDIS_URL else None
        recovered = recover_interrupted_messages(older_than)
        if recovered:
            self.stdout.write(f"Marked {recovered} unfinished answer(s) as interrupted.")
        if not settings.OPENROUTER_API_KEY:
            self.stdout.write(
                self.style.WARNING(
                    "OPENROUTER_API_KEY is not set: pages work, but chat needs the key "
                    "(set it in the environment or .env and restart)."
                )
            )
        # Attachments unused past their retention are removed on a schedule (cron not needed).
        start_cleanup_schedule(settings.ATTACHMENTS_CLEANUP_INTERVAL_SECONDS)
        self.stdout.write(f"Serving on http://{host}:{port}/")
        # The start-up work's connection is not kept for the life of the process: requests and
        # turns use the pooled threads' connections (config/threads.py).
        connections.close_all()

        import uvicorn

        uvicorn.run(
            "config.asgi:application",
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            lifespan="off",
            log_level="warning",
            proxy_headers=bool(settings.SECURE_PROXY_SSL_HEADER),
        )

    def _ensure_admin(self) -> None:
        users = get_user_model().objects
        if users.filter(is_staff=True, is_active=True).exists():
            return
        password = secrets.token_urlsafe(12)
        users.create_superuser("admin", email="", password=password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the staff superuser 'admin' with password: {password}\n"
                "(shown once; change it in the admin)"
            )
        )
