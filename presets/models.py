from django.conf import settings
from django.db import models


class UserModelSettingsQuerySet(models.QuerySet["UserModelSettings"]):
    def for_user(self, user) -> "UserModelSettingsQuerySet":
        return self.filter(user=user)


class UserModelSettings(models.Model):
    """A user's remembered chat setup: what every chat turn of theirs sends to OpenRouter.

    `parameters`, `reasoning` and `provider` hold OpenRouter's own field names, so a turn sends
    them as they are; they were validated (presets.services) when they were saved.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="model_settings"
    )
    # Empty means the server default (OPENROUTER_DEFAULT_MODEL).
    model = models.CharField(max_length=200, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    reasoning = models.JSONField(default=dict, blank=True)
    provider = models.JSONField(default=dict, blank=True)
    # Empty means the server's system prompt (OPENROUTER_SYSTEM_PROMPT).
    system_prompt = models.TextField(blank=True)
    planning_enabled = models.BooleanField(default=False)
    # The model picker's filter state (search, facets, sort), kept as the picker sent it.
    model_filters = models.JSONField(default=dict, blank=True)
    favourites = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = UserModelSettingsQuerySet.as_manager()

    class Meta:
        verbose_name = "user model settings"
        verbose_name_plural = "user model settings"

    def __str__(self) -> str:
        return f"Model settings of {self.user}"


class PresetQuerySet(models.QuerySet["Preset"]):
    def default(self) -> "PresetQuerySet":
        return self.filter(is_default=True)


class Preset(models.Model):
    """A saved setup, shared by all staff: one click restores model, parameters and tools."""

    name = models.CharField(max_length=100, unique=True)
    model = models.CharField(max_length=200, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    reasoning = models.JSONField(default=dict, blank=True)
    provider = models.JSONField(default=dict, blank=True)
    system_prompt = models.TextField(blank=True)
    # {server_id: {"enabled": bool, "disabled_tools": [...]}} as integrations.services keeps it.
    mcp_servers = models.JSONField(default=dict, blank=True)
    planning_enabled = models.BooleanField(default=False)
    model_filters = models.JSONField(default=dict, blank=True)
    is_default = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PresetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="presets_one_default_preset",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Suggestion(models.Model):
    """A quick-prompt chip shown on an empty conversation; one list shared by everyone."""

    label = models.CharField(max_length=100)
    text = models.TextField()
    position = models.PositiveIntegerField(default=0, db_index=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.label
