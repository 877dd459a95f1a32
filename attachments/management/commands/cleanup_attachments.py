from django.conf import settings
from django.core.management.base import BaseCommand

from attachments.services import cleanup_attachments


class Command(BaseCommand):
    help = (
        "Delete attachments not used for ATTACHMENTS_RETENTION_DAYS and retry deletions that "
        "failed before. Idempotent; safe to run from cron."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be removed; change nothing."
        )

    def handle(self, *args, dry_run: bool, **options):
        report = cleanup_attachments(dry_run=dry_run)
        verb = "Would remove" if dry_run else "Removed"
        for attachment in report.removed:
            self.stdout.write(
                f"{verb} {attachment.public_id} {attachment.storage_name} "
                f"({attachment.mime_type}, {attachment.size_bytes} bytes, "
                f"owner {attachment.user_id})"
            )
        for attachment in report.failed:
            self.stderr.write(
                f"Could not remove {attachment.public_id} {attachment.storage_name}: "
                "kept for the next run"
            )
        summary = (
            f"{verb} {len(report.removed)} attachment(s) unused for "
            f"{settings.ATTACHMENTS_RETENTION_DAYS:g} days or waiting for deletion"
        )
        if report.failed:
            summary += f"; {len(report.failed)} failed and will be retried"
        self.stdout.write(summary + ".")
