"""Per-user model settings, presets, prompt suggestions and generation details.

Interfaces used by other apps: `planning_enabled_for(user)` (the MCP planner),
`turn_settings_for(user)` and `user_system_prompt(user)` (the chat turn).
"""

import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import Http404
from pydantic import BaseModel, ValidationError

from chat import openrouter
from chat.models import Message
from chat.openrouter import UpstreamError
from presets import catalogue
from presets.models import Preset, Suggestion, UserModelSettings
from presets.schemas import ModelParameters, ProviderRouting, ReasoningSettings, compact

log = logging.getLogger(__name__)

MAX_FAVOURITES = 200
MAX_SUGGESTIONS = 50
RESERVED_PRESET_NAMES = {"default"}


class SettingsError(Exception):
    """A request the settings or presets cannot honour; `status` is the HTTP answer."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidSetting(SettingsError):
    status = 400


class PresetConflict(SettingsError):
    """The preset cannot be created or applied as asked (name taken, model or server gone)."""

    status = 409


# Per-user settings ----------------------------------------------------------------------------


_PRESET_FIELDS = (
    "model",
    "parameters",
    "reasoning",
    "provider",
    "system_prompt",
    "planning_enabled",
    "model_filters",
)


_PRELOADED = "_preloaded_model_settings"
_NOT_LOADED = object()


def preload_user_settings(user) -> None:
    """Keep the settings row that was read with `user` (`select_related("user__model_settings")`)
    for the next get_user_settings call on this user object, which then needs no query. Used
    once, so a user object that lives on (a WebSocket's) never sees settings that went stale."""
    related = UserModelSettings.user.field.remote_field
    if related.is_cached(user):
        user.__dict__[_PRELOADED] = related.get_cached_value(user)
        related.delete_cached_value(user)


def get_user_settings(user) -> UserModelSettings:
    """The user's settings; a user without any starts from the default preset (if one is set)."""
    preloaded = user.__dict__.pop(_PRELOADED, _NOT_LOADED)
    if preloaded is not _NOT_LOADED:
        existing = preloaded  # read with the user a moment ago; used once
    else:
        existing = UserModelSettings.objects.for_user(user).first()
    if existing is not None:
        return existing
    fresh = UserModelSettings(user=user)
    default = Preset.objects.default().first()
    if default is not None:
        _copy_preset_fields(default, fresh)
    try:
        with transaction.atomic():
            fresh.save()
    except IntegrityError:
        # Two first requests of a new user raced; the other one created the row.
        return UserModelSettings.objects.get(user=user)
    return fresh


def _copy_preset_fields(source: Preset | UserModelSettings, target: Preset | UserModelSettings):
    for name in _PRESET_FIELDS:
        value = getattr(source, name)
        # JSON values are copied so the two rows never share a mutable object.
        setattr(target, name, _copy_json(value))


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def effective_model(model_settings: UserModelSettings) -> str:
    return model_settings.model or settings.OPENROUTER_DEFAULT_MODEL


def settings_payload(model_settings: UserModelSettings) -> dict[str, Any]:
    """The settings as `GET /api/settings/model` shows them."""
    model = effective_model(model_settings)
    known = catalogue.input_modalities(model) is not None
    return {
        "model": model,
        "model_is_default": not model_settings.model,
        "default_model": settings.OPENROUTER_DEFAULT_MODEL,
        "parameters": model_settings.parameters,
        "reasoning": model_settings.reasoning,
        "provider": model_settings.provider,
        "planning_enabled": model_settings.planning_enabled,
        "model_filters": model_settings.model_filters,
        "favourites": model_settings.favourites,
        # Saved parameters the chosen model does not list (kept, and sent: OpenRouter ignores
        # them unless provider.require_parameters is set). Empty when the model is unknown.
        "unsupported_parameters": _unsupported(model, model_settings.parameters) if known else [],
        "updated_at": model_settings.updated_at,
    }


def _unsupported(model_id: str, parameters: dict[str, Any]) -> list[str]:
    snapshot_model = catalogue.cached_model(model_id)
    if snapshot_model is None or not snapshot_model["supported_parameters"]:
        return []
    supported = set(snapshot_model["supported_parameters"])
    return sorted(k for k in parameters if k not in supported)


def _validated(schema: type[BaseModel], value: dict[str, Any], prefix: str) -> dict[str, Any]:
    try:
        return compact(schema.model_validate(value))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in (prefix, *error["loc"]) if p != "")
        raise InvalidSetting(f"{where}: {error['msg']}") from None


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A partial update: given keys replace, null removes, the rest stays."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def check_against_model(
    model_id: str,
    parameters: dict[str, Any],
    reasoning: dict[str, Any],
    *,
    checked: set[str] | None = None,
    models: dict[str, dict[str, Any]] | None = None,
    require_known: bool = True,
) -> None:
    """Check settings against what the model supports, naming the first field that does not fit.

    `checked` limits the checks to those parameter names (a PUT checks the values it sets, so
    switching models never fails on older values); pass an empty `reasoning` to skip it.
    Without a catalogue (`models` None) nothing is checked.
    """
    if models is None:
        return
    model = models.get(model_id)
    if model is None:
        if require_known:
            raise InvalidSetting(f"model: unknown model {model_id!r}")
        return
    supported = set(model["supported_parameters"])
    names = set(parameters) if checked is None else checked & set(parameters)
    if supported:
        for name in sorted(names):
            if name not in supported:
                raise InvalidSetting(
                    f"parameters.{name}: not supported by {model_id} "
                    f"(it supports {', '.join(sorted(supported))})"
                )
        if reasoning and not model["supports_reasoning"]:
            raise InvalidSetting(f"reasoning: {model_id} does not support reasoning settings")
    limit = model["max_completion_tokens"] or model["context_length"]
    max_tokens = parameters.get("max_tokens")
    if "max_tokens" in names and limit and isinstance(max_tokens, int) and max_tokens > limit:
        raise InvalidSetting(f"parameters.max_tokens: {model_id} allows at most {limit} tokens")


def update_model_settings(user, patch: dict[str, Any]) -> UserModelSettings:
    """A partial update of the user's settings (`PUT /api/settings/model`).

    `patch` holds the fields the request set: `model` (null or "" means the server default),
    `parameters`/`reasoning`/`provider` (merged key by key, null removes a key),
    `planning_enabled`, `model_filters` and `favourites` (replaced). Values were type- and
    range-checked by the schema; here they are checked against the chosen model.
    """
    get_user_settings(user)
    # Only a change the model could refuse needs the catalogue (favourites, filters do not).
    needs_catalogue = "model" in patch or any(
        v is not None
        for name in ("parameters", "reasoning")
        for v in (patch.get(name) or {}).values()
    )
    models = catalogue.catalogue_or_none() if needs_catalogue else None
    with transaction.atomic():
        current = UserModelSettings.objects.select_for_update().get(user=user)
        if "model" in patch:
            current.model = (patch["model"] or "").strip()
        parameters = _validated(
            ModelParameters,
            _merge(current.parameters, patch.get("parameters") or {}),
            "parameters",
        )
        reasoning_patch = dict(patch.get("reasoning") or {})
        # Effort and a token budget are alternatives: setting one replaces the other.
        for chosen, other in (("effort", "max_tokens"), ("max_tokens", "effort")):
            if reasoning_patch.get(chosen) is not None and other not in reasoning_patch:
                reasoning_patch[other] = None
        reasoning = _validated(
            ReasoningSettings, _merge(current.reasoning, reasoning_patch), "reasoning"
        )
        provider = _validated(
            ProviderRouting, _merge(current.provider, patch.get("provider") or {}), "provider"
        )
        set_parameters = {k for k, v in (patch.get("parameters") or {}).items() if v is not None}
        set_reasoning = any(v is not None for v in (patch.get("reasoning") or {}).values())
        check_against_model(
            effective_model(current),
            parameters,
            reasoning if set_reasoning else {},
            checked=set_parameters,
            models=models,
            require_known="model" in patch and bool(current.model),
        )
        current.parameters, current.reasoning, current.provider = parameters, reasoning, provider
        if "planning_enabled" in patch:
            current.planning_enabled = bool(patch["planning_enabled"])
        if "model_filters" in patch:
            current.model_filters = patch["model_filters"] or {}
        if "favourites" in patch:
            current.favourites = _unique(patch["favourites"] or [])[:MAX_FAVOURITES]
        current.save()
    return current


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(str(i) for i in items))


def set_model(user, model_id: str) -> UserModelSettings:
    """The picker's choice: the next message (and later ones) use this model."""
    return update_model_settings(user, {"model": model_id})


def toggle_favourite(user, model_id: str) -> list[str]:
    """Star or unstar a model in the picker; returns the new favourites."""
    get_user_settings(user)
    with transaction.atomic():
        current = UserModelSettings.objects.select_for_update().get(user=user)
        favourites = list(current.favourites)
        if model_id in favourites:
            favourites.remove(model_id)
        else:
            favourites = [*favourites, model_id][-MAX_FAVOURITES:]
        current.favourites = favourites
        current.save(update_fields=["favourites", "updated_at"])
    return favourites


def get_system_prompt(user) -> str | None:
    return get_user_settings(user).system_prompt or None


def set_system_prompt(user, prompt: str | None) -> str | None:
    """Save the user's system prompt; None or blank clears it (the server's prompt applies)."""
    value = prompt if prompt is not None and prompt.strip() else ""
    model_settings = get_user_settings(user)
    model_settings.system_prompt = value
    model_settings.save(update_fields=["system_prompt", "updated_at"])
    return value or None


def user_system_prompt(user) -> str | None:
    """The user's own system prompt, or None when they have not set one."""
    value = UserModelSettings.objects.for_user(user).values_list("system_prompt", flat=True).first()
    return value or None


def planning_enabled_for(user) -> bool:
    """Whether the tool-planning step runs for this user's turns."""
    return bool(
        UserModelSettings.objects.for_user(user).values_list("planning_enabled", flat=True).first()
    )


async def aplanning_enabled_for(user) -> bool:
    value = (
        await UserModelSettings.objects.for_user(user)
        .values_list("planning_enabled", flat=True)
        .afirst()
    )
    return bool(value)


@dataclass
class TurnSettings:
    """What a chat turn sends from the saved settings (the request body overrides these)."""

    model: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    # The user's own system prompt (None: the configured default applies).
    system_prompt: str | None = None
    planning_enabled: bool = False


def turn_settings_for(user) -> TurnSettings:
    model_settings = get_user_settings(user)
    params: dict[str, Any] = _copy_json(model_settings.parameters)
    if model_settings.reasoning:
        params["reasoning"] = _copy_json(model_settings.reasoning)
    if model_settings.provider:
        params["provider"] = _copy_json(model_settings.provider)
    return TurnSettings(
        model=model_settings.model,
        params=params,
        system_prompt=model_settings.system_prompt or None,
        planning_enabled=bool(model_settings.planning_enabled),
    )


def active_provider(user) -> dict[str, Any]:
    """The provider side of the active model: whose model it is, the routing preferences, and
    which upstream provider served the user's latest answer."""
    model_settings = get_user_settings(user)
    model = effective_model(model_settings)
    cached = catalogue.cached_model(model)
    last = (
        Message.objects.for_user(user)
        .filter(role=Message.Role.ASSISTANT, routing__isnull=False)
        .order_by("-pk")
        .values_list("routing", "model")
        .first()
    )
    return {
        "model": model,
        "provider": model.split("/", 1)[0] if "/" in model else "",
        "provider_name": cached["provider_name"] if cached else "",
        "routing": model_settings.provider,
        "last_used_provider": (last[0] or {}).get("provider") if last else None,
        "last_used_model": last[1] if last else None,
    }


# Presets --------------------------------------------------------------------------------------


def get_preset(name: str) -> Preset:
    """Presets are shared by staff, so the access helper only 404s on unknown names."""
    try:
        return Preset.objects.get(name=name)
    except Preset.DoesNotExist:
        raise Http404(f"Preset {name!r} not found") from None


def list_presets() -> list[Preset]:
    return list(Preset.objects.all())


def get_default_preset() -> Preset | None:
    return Preset.objects.default().first()


def preset_payload(preset: Preset) -> dict[str, Any]:
    return {
        "name": preset.name,
        "model": preset.model,
        "parameters": preset.parameters,
        "reasoning": preset.reasoning,
        "provider": preset.provider,
        "system_prompt": preset.system_prompt or None,
        "mcp_servers": preset.mcp_servers,
        "planning_enabled": preset.planning_enabled,
        "model_filters": preset.model_filters,
        "is_default": preset.is_default,
        "created_at": preset.created_at,
        "updated_at": preset.updated_at,
    }


def _capture(user, preset: Preset) -> None:
    from integrations.services import get_server_state

    model_settings = get_user_settings(user)
    _copy_preset_fields(model_settings, preset)
    preset.model = effective_model(model_settings)
    preset.mcp_servers = get_server_state()


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidSetting("name: must not be blank")
    if name.lower() in RESERVED_PRESET_NAMES:
        raise InvalidSetting(f"name: {name!r} is reserved")
    return name


def create_preset(user, name: str, *, make_default: bool = False) -> Preset:
    """Save the user's current setup (and the MCP servers' state) as a new preset."""
    name = _check_name(name)
    preset = Preset(name=name, created_by=user)
    _capture(user, preset)
    try:
        with transaction.atomic():
            if make_default:
                Preset.objects.default().update(is_default=False)
                preset.is_default = True
            preset.save()
    except IntegrityError:
        raise PresetConflict(f"A preset named {name!r} already exists") from None
    return preset


def save_preset(user, name: str) -> Preset:
    """Overwrite an existing preset with the user's current setup."""
    with transaction.atomic():
        preset = get_preset(name)
        _capture(user, preset)
        preset.save()
    return preset


def delete_preset(name: str) -> None:
    get_preset(name).delete()


@transaction.atomic
def set_default_preset(name: str) -> Preset:
    preset = get_preset(name)
    Preset.objects.default().exclude(pk=preset.pk).update(is_default=False)
    preset.is_default = True
    preset.save(update_fields=["is_default", "updated_at"])
    return preset


def _check_preset(preset: Preset, models: dict[str, dict[str, Any]] | None) -> None:
    """Everything that could stop the preset from applying, before anything is changed."""
    from integrations.services import get_server_state

    parameters = _validated(ModelParameters, preset.parameters or {}, "parameters")
    reasoning = _validated(ReasoningSettings, preset.reasoning or {}, "reasoning")
    _validated(ProviderRouting, preset.provider or {}, "provider")
    model = preset.model or settings.OPENROUTER_DEFAULT_MODEL
    if models is not None and model not in models:
        raise PresetConflict(
            f"Preset {preset.name!r} uses the model {model!r}, which is not available"
        )
    try:
        check_against_model(model, parameters, reasoning, models=models)
    except InvalidSetting as exc:
        raise PresetConflict(f"Preset {preset.name!r} does not fit its model: {exc}") from None
    missing = sorted(set(preset.mcp_servers or {}) - set(get_server_state()))
    if missing:
        raise PresetConflict(
            f"Preset {preset.name!r} names MCP server(s) that are not configured: "
            f"{', '.join(missing)}"
        )


def apply_preset(user, name: str, *, include_servers: bool = True) -> UserModelSettings:
    """Restore a preset: the user's settings and (unless told not to) the MCP servers' state.

    Everything is checked first and then applied in one transaction, so a preset naming a
    model or an MCP server that is gone changes nothing (PresetConflict names it).
    """
    from integrations.services import apply_server_state

    preset = get_preset(name)
    models = catalogue.catalogue_or_none()
    _check_preset(preset, models)
    get_user_settings(user)
    try:
        with transaction.atomic():
            current = UserModelSettings.objects.select_for_update().get(user=user)
            _copy_preset_fields(preset, current)
            current.save()
            if include_servers:
                apply_server_state(_copy_json(preset.mcp_servers or {}))
    except ValueError as exc:
        raise PresetConflict(f"Preset {preset.name!r} cannot be applied: {exc}") from None
    return current


def apply_default_preset(user) -> Preset | None:
    """Start a new conversation from the default preset (the user's side of it: model,
    parameters, prompt, planning, filters). The MCP servers are shared by everyone, so a new
    conversation does not switch them; `apply_preset` does when asked. Returns the preset, or
    None when there is no default or it no longer fits (then the settings stay as they are)."""
    preset = get_default_preset()
    if preset is None:
        return None
    try:
        apply_preset(user, preset.name, include_servers=False)
    except SettingsError as exc:
        log.warning("Default preset not applied to a new conversation: %s", exc.message)
        return None
    return preset


# Suggestions ----------------------------------------------------------------------------------


def list_suggestions() -> list[dict[str, str]]:
    return [{"label": s.label, "text": s.text} for s in Suggestion.objects.all()]


@transaction.atomic
def add_suggestion(label: str, text: str) -> list[dict[str, str]]:
    existing = list(Suggestion.objects.select_for_update().values_list("position", flat=True))
    if len(existing) >= MAX_SUGGESTIONS:
        raise InvalidSetting(f"suggestions: at most {MAX_SUGGESTIONS}")
    Suggestion.objects.create(label=label, text=text, position=max(existing, default=-1) + 1)
    return list_suggestions()


@transaction.atomic
def replace_suggestions(items: list[dict[str, str]]) -> list[dict[str, str]]:
    if len(items) > MAX_SUGGESTIONS:
        raise InvalidSetting(f"suggestions: at most {MAX_SUGGESTIONS}")
    Suggestion.objects.all().delete()
    Suggestion.objects.bulk_create(
        Suggestion(label=item["label"], text=item["text"], position=index)
        for index, item in enumerate(items)
    )
    return list_suggestions()


@transaction.atomic
def delete_suggestion(index: int) -> list[dict[str, str]]:
    """Delete the suggestion at this position of the list (0-based); 404 when there is none."""
    suggestions = list(Suggestion.objects.select_for_update())
    if not 0 <= index < len(suggestions):
        raise Http404(f"No suggestion at index {index}")
    suggestions[index].delete()
    return list_suggestions()


# Generation details ---------------------------------------------------------------------------


def get_message_for_user(user, message_id: int) -> Message:
    """The access helper for one of the user's assistant messages; 404 for anything else."""
    try:
        return Message.objects.for_user(user).get(pk=message_id, role=Message.Role.ASSISTANT)
    except Message.DoesNotExist:
        raise Http404("Message not found") from None


async def generation_details(user, message_id: int) -> dict[str, Any]:
    """What the per-message details view shows: what was stored with the answer, plus
    OpenRouter's statistics for its generation when they can be had (`upstream` is None and
    `upstream_error` says why when not)."""
    from asgiref.sync import sync_to_async

    message = await sync_to_async(get_message_for_user)(user, message_id)
    usage = message.usage or {}
    details: dict[str, Any] = {
        "message_id": message.pk,
        "generation_id": message.generation_id or None,
        "model": message.model,
        "provider": (message.routing or {}).get("provider"),
        "status": message.status,
        "finish_reason": message.finish_reason or None,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "cost": float(message.cost) if message.cost is not None else None,
        "duration_ms": message.duration_ms,
        "latency_ms": None,
        "generation_time_ms": None,
        "upstream": None,
        "upstream_error": None,
    }
    if not message.generation_id:
        details["upstream_error"] = "This answer has no generation id"
        return details
    try:
        payload = await openrouter.get_json("/generation", {"id": message.generation_id})
    except UpstreamError as exc:
        details["upstream_error"] = exc.message
        return details
    stats = payload.get("data", payload) if isinstance(payload, dict) else {}
    if isinstance(stats, dict):
        details["upstream"] = stats
        details["provider"] = stats.get("provider_name") or details["provider"]
        details["latency_ms"] = stats.get("latency")
        details["generation_time_ms"] = stats.get("generation_time")
        if stats.get("total_cost") is not None:
            details["cost"] = stats["total_cost"]
        for ours, theirs in (
            ("prompt_tokens", "tokens_prompt"),
            ("completion_tokens", "tokens_completion"),
        ):
            if stats.get(theirs) is not None:
                details[ours] = stats[theirs]
    return details
