import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from integrations import services


class Command(BaseCommand):
    help = (
        'Import MCP server configs from an mcp_servers.json file ({"servers": [{"id", "url", '
        '"enabled", "disabled_tools"}]}). Listed servers are created or updated; with --replace, '
        "servers not in the file are removed."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="the JSON file, or - for standard input")
        parser.add_argument("--replace", action="store_true")

    def handle(self, *args, path: str, replace: bool, **options):
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
            count = services.import_servers(text, replace=replace)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        except (ValueError, json.JSONDecodeError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Imported {count} MCP server(s)."))
