from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from pydantic import BaseModel, ValidationError

from presets.models import Preset, Suggestion, UserModelSettings
from presets.schemas import ModelParameters, ProviderRouting, ReasoningSettings

_SCHEMAS: dict[str, type[BaseModel]] = {
    "parameters": ModelParameters,
    "reasoning": ReasoningSettings,
    "provider": ProviderRouting,
}


class _SettingsForm(forms.ModelForm):
    """Checks the JSON settings with the same schemas as the API, naming the bad key."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name, schema in _SCHEMAS.items():
            value = cleaned.get(name)
            if value in (None, ""):
                cleaned[name] = {}
                continue
            if not isinstance(value, dict):
                self.add_error(name, "Enter a JSON object.")
                continue
            try:
                schema.model_validate(value)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(p) for p in error["loc"]) or name
                self.add_error(name, f"{where}: {error['msg']}")
        return cleaned


class PresetForm(_SettingsForm):
    class Meta:
        model = Preset
        fields = [
            "name", "model", "parameters", "reasoning", "provider", "system_prompt",
            "mcp_servers", "planning_enabled", "model_filters", "is_default",
        ]  # fmt: skip

    def validate_constraints(self) -> None:
        # The only constraint is "one default"; saving a new default unsets the old one.
        return None


class UserModelSettingsForm(_SettingsForm):
    class Meta:
        model = UserModelSettings
        fields = [
            "user", "model", "parameters", "reasoning", "provider", "system_prompt",
            "planning_enabled", "model_filters", "favourites",
        ]  # fmt: skip


@admin.register(Preset)
class PresetAdmin(admin.ModelAdmin):
    form = PresetForm
    list_display = ["name", "model", "is_default", "planning_enabled", "updated_at"]
    list_filter = ["is_default", "planning_enabled"]
    search_fields = ["name", "model", "system_prompt"]
    readonly_fields = ["created_by", "created_at", "updated_at"]

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user
        with transaction.atomic():
            if obj.is_default:
                Preset.objects.default().exclude(pk=obj.pk).update(is_default=False)
            super().save_model(request, obj, form, change)


@admin.register(UserModelSettings)
class UserModelSettingsAdmin(admin.ModelAdmin):
    form = UserModelSettingsForm
    list_display = ["user", "model", "planning_enabled", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "model"]
    raw_id_fields = ["user"]


@admin.register(Suggestion)
class SuggestionAdmin(admin.ModelAdmin):
    list_display = ["label", "position", "text"]
    list_editable = ["position"]
    ordering = ["position", "id"]
