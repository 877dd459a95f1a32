"""What the chat page's model picker, settings panel, presets panel and suggestion chips show.

Context builders and form parsing for the partials in templates/presets/panels.html; the views
stay thin and the domain work stays in presets.services and presets.catalogue.
"""

from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import QueryDict

from chat.models import Conversation
from chat.openrouter import UpstreamError
from presets import catalogue, services

PICKER_LIMIT = 100
PICKER_SORTS = [
    ("", "Default order"),
    ("price", "Cheapest"),
    ("-price", "Most expensive"),
    ("-context", "Largest context"),
    ("newest", "Newest"),
    ("name", "Name"),
]
PICKER_KEYS = ("q", "tools", "image", "min_context", "max_price", "provider", "sort", "favourites")


def next_model_for(user, conversation: Conversation | None = None) -> str:
    """The model the user's next message goes to (the same order prepare_turn uses)."""
    saved = services.turn_settings_for(user).model
    return (
        saved or (conversation.model if conversation else "") or settings.OPENROUTER_DEFAULT_MODEL
    )


# Model picker ---------------------------------------------------------------------------------


def _number(raw: str | None, cast=float) -> Any:
    try:
        return cast(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def picker_state(query: QueryDict | dict[str, Any] | None) -> dict[str, Any]:
    """The picker's form values, cleaned (unusable numbers are dropped, not errors)."""
    query = query or {}
    sort = str(query.get("sort") or "")
    return {
        "q": str(query.get("q") or "")[:200],
        "tools": bool(query.get("tools")),
        "image": bool(query.get("image")),
        "min_context": _number(query.get("min_context"), int),
        "max_price": _number(query.get("max_price")),
        "provider": str(query.get("provider") or "")[:100],
        "sort": sort if sort in dict(PICKER_SORTS) else "",
        "favourites": bool(query.get("favourites")),
    }


def _filters(state: dict[str, Any], favourites: list[str]) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if state["image"]:
        filters["input_modalities"] = "image"
    if state["min_context"]:
        filters["context_length"] = {"min": state["min_context"]}
    if state["max_price"] is not None:
        filters["prompt_price_per_million"] = {"max": state["max_price"]}
    if state["provider"]:
        filters["provider"] = state["provider"]
    if state["favourites"]:
        filters["id"] = {"in": favourites}
    return filters


def picker_context(user, query: QueryDict | dict[str, Any] | None = None) -> dict[str, Any]:
    """Models for the picker. Without a query, the user's remembered picker state is used; a
    query becomes the remembered state (presets capture it as "model filter settings")."""
    model_settings = services.get_user_settings(user)
    if query is None or not any(k in query for k in PICKER_KEYS):
        state = picker_state(model_settings.model_filters)
    else:
        state = picker_state(query)
        if state != model_settings.model_filters:
            model_settings.model_filters = state
            model_settings.save(update_fields=["model_filters", "updated_at"])
    favourites = list(model_settings.favourites)
    context: dict[str, Any] = {
        "state": state,
        "sorts": PICKER_SORTS,
        "favourites": set(favourites),
        "current_model": services.effective_model(model_settings),
        "models": [],
        "count": 0,
        "more": 0,
        "providers": [],
        "picker_error": "",
    }
    try:
        selection = async_to_sync(catalogue.select_models)(
            tools_only=state["tools"],
            search=state["q"],
            filters=_filters(state, favourites),
            sort=state["sort"] or None,
        )
        everything = async_to_sync(catalogue.get_models)()
    except (UpstreamError, catalogue.FilterError) as exc:
        context["picker_error"] = getattr(exc, "message", str(exc))
        return context
    context.update(
        models=selection.models[:PICKER_LIMIT],
        count=len(selection.models),
        more=max(0, len(selection.models) - PICKER_LIMIT),
        providers=[f["value"] for f in catalogue.facets(everything)["providers"]],
    )
    return context


# Settings panel -------------------------------------------------------------------------------

_PARAMETER_FIELDS: dict[str, type] = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "max_tokens": int,
    "frequency_penalty": float,
    "presence_penalty": float,
    "repetition_penalty": float,
    "seed": int,
}


@dataclass
class SettingsForm:
    patch: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    error: str = ""


def _words(raw: str | None) -> list[str] | None:
    items = [w.strip() for w in (raw or "").replace("\n", ",").split(",") if w.strip()]
    return items or None


def parse_settings_form(data: QueryDict) -> SettingsForm:
    """The settings panel's fields as a full replacement of the saved settings.

    A blank field removes that setting. A value that is not a number is an error naming the
    field; ranges and model support are checked by presets.services.
    """
    form = SettingsForm()
    parameters: dict[str, Any] = {}
    for name, cast in _PARAMETER_FIELDS.items():
        raw = (data.get(name) or "").strip()
        if not raw:
            parameters[name] = None
            continue
        try:
            parameters[name] = cast(raw)
        except ValueError:
            form.error = f"parameters.{name}: enter a {'whole ' if cast is int else ''}number"
            return form
    stop = [s for s in (data.get("stop") or "").splitlines() if s.strip()]
    parameters["stop"] = stop or None
    budget = (data.get("reasoning_max_tokens") or "").strip()
    try:
        reasoning_budget = int(budget) if budget else None
    except ValueError:
        form.error = "reasoning.max_tokens: enter a whole number"
        return form
    reasoning = {
        "effort": data.get("reasoning_effort") or None,
        "max_tokens": reasoning_budget,
        "exclude": True if data.get("reasoning_hidden") else None,
    }
    fallbacks = data.get("allow_fallbacks") or ""
    provider = {
        "order": _words(data.get("provider_order")),
        "only": _words(data.get("provider_only")),
        "ignore": _words(data.get("provider_ignore")),
        "allow_fallbacks": {"yes": True, "no": False}.get(fallbacks),
        "data_collection": "deny" if data.get("deny_data_collection") else None,
        "zdr": True if data.get("zdr") else None,
        "sort": data.get("provider_sort") or None,
    }
    form.patch = {
        "parameters": parameters,
        "reasoning": reasoning,
        "provider": provider,
        "planning_enabled": bool(data.get("planning_enabled")),
    }
    form.system_prompt = data.get("system_prompt")
    return form


def save_settings_form(user, data: QueryDict) -> str:
    """Apply the settings panel; returns an error naming the field, or "" when saved."""
    form = parse_settings_form(data)
    if form.error:
        return form.error
    try:
        services.update_model_settings(user, form.patch)
    except services.SettingsError as exc:
        return exc.message
    services.set_system_prompt(user, form.system_prompt)
    return ""


def settings_panel_context(user, error: str = "", saved: bool = False) -> dict[str, Any]:
    model_settings = services.get_user_settings(user)
    model = services.effective_model(model_settings)
    cached = catalogue.cached_model(model)
    return {
        "model_settings": model_settings,
        "current_model": model,
        "supported": set(cached["supported_parameters"]) if cached else None,
        "parameters": model_settings.parameters,
        "stop_text": "\n".join(
            s
            for s in (
                model_settings.parameters.get("stop")
                if isinstance(model_settings.parameters.get("stop"), list)
                else [model_settings.parameters.get("stop") or ""]
            )
            if s
        ),
        "reasoning": model_settings.reasoning,
        "provider": model_settings.provider,
        "provider_lists": {
            key: ", ".join(model_settings.provider.get(key) or [])
            for key in ("order", "only", "ignore")
        },
        "efforts": ["minimal", "low", "medium", "high"],
        "provider_sorts": ["price", "throughput", "latency"],
        "error": error,
        "saved": saved,
    }


# Presets panel and suggestions ----------------------------------------------------------------


def presets_panel_context(user, error: str = "", notice: str = "") -> dict[str, Any]:
    return {
        "presets": services.list_presets(),
        "current_model": services.effective_model(services.get_user_settings(user)),
        "error": error,
        "notice": notice,
    }


def page_context(user) -> dict[str, Any]:
    """The models page: every panel, from the user's remembered state."""
    return {
        **settings_panel_context(user),
        **presets_panel_context(user),
        **picker_context(user),
    }


def suggestions_context() -> dict[str, Any]:
    return {"suggestions": services.list_suggestions()}
