import json
from pathlib import Path

from django.core.management.base import BaseCommand

from integrations import services


class Command(BaseCommand):
    help = "Export MCP server configs in the mcp_servers.json format (bearer tokens never)."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default="-", help="file to write, - for stdout")

    def handle(self, *args, path: str, **options):
        text = json.dumps(services.export_servers(), indent=2) + "\n"
        if path == "-":
            self.stdout.write(text, ending="")
        else:
            Path(path).write_text(text)
            self.stdout.write(self.style.SUCCESS(f"Wrote {path}"))
