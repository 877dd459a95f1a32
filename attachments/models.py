import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_public_id() -> str:
    return "att_" + secrets.token_hex(12)


class AttachmentQuerySet(models.QuerySet["Attachment"]):
    def for_user(self, user) -> "AttachmentQuerySet":
        """The user's attachments that still exist (rows waiting for deletion, or whose
        conversation is gone, are hidden)."""
        return self.filter(user=user, delete_pending=False, conversation__isnull=False)

    def due_for_cleanup(self, now: datetime) -> "AttachmentQuerySet":
        """Unused for longer than the retention period, waiting for a retried delete, or left
        behind by a user or conversation deleted some other way (e.g. in the admin)."""
        cutoff = now - timedelta(days=settings.ATTACHMENTS_RETENTION_DAYS)
        return self.filter(
            models.Q(delete_pending=True)
            | models.Q(last_used_at__lt=cutoff)
            | models.Q(user__isnull=True)
            | models.Q(conversation__isnull=True)
        )


class Attachment(models.Model):
    """An uploaded image or PDF. The file lives in the attachments storage under `storage_name`,
    a name we generate; the user's filename is metadata only."""

    class Kind(models.TextChoices):
        IMAGE = "image"
        PDF = "pdf"

    public_id = models.CharField(max_length=40, unique=True, default=new_public_id)
    # SET_NULL, not CASCADE, here and below: a row must outlive its owner or conversation until
    # the cleanup has deleted its file (the services delete files first; a deleted user's or an
    # admin-deleted conversation's rows are picked up by the next cleanup run).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="attachments",
    )
    conversation = models.ForeignKey(
        "chat.Conversation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="attachments",
    )
    # The user message that first sent it to the model.
    message = models.ForeignKey(
        "chat.Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="attachments",
    )
    storage_name = models.CharField(max_length=255, unique=True)
    original_name = models.CharField(max_length=255, blank=True)
    mime_type = models.CharField(max_length=50)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Retention counts from here: set at upload and each time the file is sent to the model.
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The owner deleted it (or its message or conversation) but removing the file failed.
    delete_pending = models.BooleanField(default=False, db_index=True)

    objects = AttachmentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.original_name or self.public_id} ({self.mime_type})"

    @property
    def expires_at(self) -> datetime:
        return self.last_used_at + timedelta(days=settings.ATTACHMENTS_RETENTION_DAYS)
