import hashlib
import json

from django.core.validators import RegexValidator
from django.db import models

from integrations import crypto

server_id_validator = RegexValidator(
    r"^[A-Za-z0-9_-]{1,40}$", "Letters, digits, '-' and '_' only (at most 40)."
)


class McpServerQuerySet(models.QuerySet["McpServer"]):
    def enabled(self) -> "McpServerQuerySet":
        return self.filter(enabled=True)


class McpServer(models.Model):
    """One MCP server the app connects to. Shared by every user (a deployment-wide setting)."""

    class Transport(models.TextChoices):
        STREAMABLE_HTTP = "streamable_http", "Streamable HTTP"
        SSE = "sse", "SSE"
        STDIO = "stdio", "stdio (subprocess)"

    class Approval(models.TextChoices):
        NEVER = "never", "Never ask"
        UNLESS_READ_ONLY = "unless_read_only", "Ask unless the tool is read-only"
        ALWAYS = "always", "Always ask"

    server_id = models.CharField("id", max_length=40, unique=True, validators=[server_id_validator])
    name = models.CharField(max_length=100, blank=True)
    transport = models.CharField(
        max_length=20, choices=Transport.choices, default=Transport.STREAMABLE_HTTP
    )
    url = models.URLField(max_length=500, blank=True)
    command = models.CharField(max_length=300, blank=True, help_text="stdio only")
    args = models.JSONField(default=list, blank=True, help_text="stdio only: a JSON list")
    env = models.JSONField(default=dict, blank=True, help_text="stdio only: a JSON object")
    enabled = models.BooleanField(default=True)
    disabled_tools = models.JSONField(default=list, blank=True)
    connect_timeout = models.FloatField(null=True, blank=True, help_text="seconds")
    call_timeout = models.FloatField(null=True, blank=True, help_text="seconds")
    headers = models.JSONField(default=dict, blank=True, help_text="extra HTTP headers")
    # Fernet ciphertext (integrations.crypto); never shown back in forms or the API.
    secret_encrypted = models.TextField(blank=True, editable=False)
    approval_policy = models.CharField(
        max_length=20, choices=Approval.choices, default=Approval.UNLESS_READ_ONLY
    )
    # Written by the registry so the admin (another thread or process) can show it.
    connected = models.BooleanField(default=False, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    tools_listed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = McpServerQuerySet.as_manager()

    class Meta:
        ordering = ["server_id"]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.name or self.server_id

    @property
    def secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted)

    def set_secret(self, plain: str) -> None:
        self.secret_encrypted = crypto.encrypt(plain)

    def connection_key(self) -> str:
        """Everything a live connection depends on: a change means reconnect."""
        data = [
            self.transport, self.url, self.command, self.args, self.env, self.headers,
            self.secret_encrypted, self.connect_timeout,
        ]  # fmt: skip
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def tool_fingerprint(description: str, schema: dict) -> str:
    raw = json.dumps([description or "", schema or {}], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class McpTool(models.Model):
    """A tool as last listed by its server (a cache for the admin, the API and approvals)."""

    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict, blank=True)
    read_only = models.BooleanField(default=False)
    fingerprint = models.CharField(max_length=64, blank=True)
    # The fingerprint when a person last approved a call: a different current one is flagged.
    approved_fingerprint = models.CharField(max_length=64, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    listed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["server", "name"]
        constraints = [models.UniqueConstraint(fields=["server", "name"], name="uniq_tool")]
        verbose_name = "MCP tool"

    def __str__(self) -> str:
        return f"{self.server.server_id}/{self.name}"

    @property
    def changed_since_approval(self) -> bool:
        return bool(self.approved_fingerprint) and self.approved_fingerprint != self.fingerprint

    @property
    def enabled(self) -> bool:
        return self.name not in (self.server.disabled_tools or [])
