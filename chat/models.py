import hashlib
import secrets
import uuid

from django.conf import settings
from django.db import models


def new_session_id() -> str:
    return uuid.uuid4().hex


class ConversationQuerySet(models.QuerySet["Conversation"]):
    def for_user(self, user) -> "ConversationQuerySet":
        return self.filter(user=user)


class Conversation(models.Model):
    """One chat session. `session_id` is the public id used by URLs and the API."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    session_id = models.CharField(max_length=100, unique=True, default=new_session_id)
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["user", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or self.session_id


class MessageQuerySet(models.QuerySet["Message"]):
    def for_user(self, user) -> "MessageQuerySet":
        return self.filter(conversation__user=user)

    def streaming(self) -> "MessageQuerySet":
        return self.filter(status=Message.Status.STREAMING)


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        CANCELLED = "cancelled"
        ERROR = "error"
        INTERRUPTED = "interrupted"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # Replies and tool results point at what they answer, so deleting a message deletes them too.
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    client_message_id = models.CharField(max_length=100, blank=True, db_index=True)
    content = models.TextField(blank=True)
    # Non-text parts of a user message (images, files) in OpenAI's content-part format.
    content_parts = models.JSONField(null=True, blank=True)
    # Markdown rendered to sanitised HTML once, when the message is saved.
    html = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    error = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True)
    finish_reason = models.CharField(max_length=40, blank=True)
    generation_id = models.CharField(max_length=200, blank=True)
    usage = models.JSONField(null=True, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    routing = models.JSONField(null=True, blank=True)
    tool_calls = models.JSONField(null=True, blank=True)
    tool_call_id = models.CharField(max_length=200, blank=True)
    tool_name = models.CharField(max_length=200, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["conversation", "id"])]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"

    @property
    def rendered(self):
        """The answer's sanitised HTML, rendered once when the message was saved."""
        from chat.rendering import stored_html

        return stored_html(self.html)

    @property
    def total_tokens(self) -> int | None:
        return (self.usage or {}).get("total_tokens")


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> "ApiTokenQuerySet":
        return self.filter(revoked_at__isnull=True, user__is_active=True)


class ApiToken(models.Model):
    """A per-user bearer token for the JSON + SSE API. Only its SHA-256 hash is stored."""

    PREFIX = "cm_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters, so a person can tell tokens apart in the admin.
    hint = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.hint}… ({self.user})"

    @classmethod
    def generate(cls) -> tuple[str, str, str]:
        """Return (raw token, its hash, its hint)."""
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        return raw, hash_token(raw), raw[:10]
