"""Models, settings, presets and suggestions routes of the JSON API (contract/api.md)."""

import functools
import json
from datetime import datetime
from typing import Any

from django.http import Http404
from ninja import Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import ConfigDict, Field, field_validator

from presets import catalogue, services
from presets.schemas import ModelParameters, ProviderRouting, ReasoningSettings, ShortText

catalogue_router = Router(tags=["models"])
settings_router = Router(tags=["settings"])
presets_router = Router(tags=["presets"])
suggestions_router = Router(tags=["suggestions"])

MAX_FILTER_SETTINGS_CHARS = 10_000


class DetailOut(Schema):
    detail: str


_ERRORS: dict[int | tuple[int, ...], Any] = {
    (400, 404, 409, 502, 503, 504): DetailOut,
}


def _domain_errors(view):
    """Answer a SettingsError with its status and message as {"detail"}, and say what was not
    found on a 404 (presets are shared, so naming the missing one reveals nothing)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except services.SettingsError as exc:
            raise HttpError(exc.status, exc.message) from None
        except Http404 as exc:
            raise HttpError(404, str(exc) or "Not found") from None

    return wrapper


# Catalogue -----------------------------------------------------------------------------------


class ModelsMetadataOut(Schema):
    total: int = Field(description="Models in the catalogue")
    base_count: int = Field(description="Models left after `tools_only`")
    count: int = Field(description="Models left after `search` and `filters` too (returned)")


class ModelsOut(Schema):
    data: list[dict[str, Any]]
    metadata: ModelsMetadataOut


_FILTERS_DOC = (
    "JSON object of dotted path -> criteria, all of which must hold. A value means equality "
    "(against a list, e.g. `input_modalities`, it means the list contains it); a list means "
    "any of these; an object uses operators `min`, `max`, `contains`, `in`, `exists`. "
    'Example: `{"input_modalities":"image","context_length":{"min":100000},'
    '"provider":["openai","anthropic"],"prompt_price_per_million":{"max":1}}`.'
)


async def _selection(tools_only: bool, search: str, filters: str | None, sort: str | None):
    try:
        return await catalogue.select_models(
            tools_only=tools_only, search=search, filters=filters, sort=sort
        )
    except catalogue.FilterError as exc:
        raise HttpError(400, str(exc)) from None


@catalogue_router.get(
    "",
    response={200: ModelsOut, **_ERRORS},
    summary="The OpenRouter model catalogue, enriched, filtered and sorted",
)
async def list_models(
    request,
    tools_only: bool = Query(False, description="Only models that accept tools"),
    search: str = Query("", max_length=200, description="Every word must match"),
    filters: str | None = Query(None, max_length=10_000, description=_FILTERS_DOC),
    sort: str | None = Query(
        None, description=f"One of {', '.join(catalogue.SORTS)} (default: upstream order)"
    ),
):
    selection = await _selection(tools_only, search, filters, sort)
    return {
        "data": selection.models,
        "metadata": {
            "total": selection.total,
            "base_count": selection.base_count,
            "count": len(selection.models),
        },
    }


@catalogue_router.get(
    "/metadata",
    response={200: dict[str, Any], **_ERRORS},
    summary="Facets for filtering the catalogue (of the whole catalogue, or of a selection)",
)
async def models_metadata(
    request,
    tools_only: bool = False,
    search: str = Query("", max_length=200),
    filters: str | None = Query(None, max_length=10_000, description=_FILTERS_DOC),
):
    selection = await _selection(tools_only, search, filters, None)
    return {"total": selection.total, **catalogue.facets(selection.models)}


# Settings ------------------------------------------------------------------------------------


class ModelSettingsOut(Schema):
    model: str
    model_is_default: bool
    default_model: str
    parameters: dict[str, Any]
    reasoning: dict[str, Any]
    provider: dict[str, Any]
    planning_enabled: bool
    model_filters: dict[str, Any]
    favourites: list[str]
    unsupported_parameters: list[str]
    updated_at: datetime


class ModelSettingsIn(Schema):
    """A partial update: only the fields sent change. Inside `parameters`, `reasoning` and
    `provider`, a key set to null is removed; `model` null (or "") means the server default."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=200)
    parameters: ModelParameters | None = None
    reasoning: ReasoningSettings | None = None
    provider: ProviderRouting | None = None
    planning_enabled: bool | None = None
    model_filters: dict[str, Any] | None = None
    favourites: list[ShortText] | None = Field(None, max_length=services.MAX_FAVOURITES)

    @field_validator("model_filters")
    @classmethod
    def _small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_FILTER_SETTINGS_CHARS:
            raise ValueError(f"at most {MAX_FILTER_SETTINGS_CHARS} characters of JSON")
        return value


@settings_router.get("/model", response=ModelSettingsOut, summary="Your model settings")
def get_model_settings(request):
    return services.settings_payload(services.get_user_settings(request.auth))


@settings_router.put(
    "/model",
    response={200: ModelSettingsOut, **_ERRORS},
    summary="Change your model settings (partial update, validated against the model)",
)
@_domain_errors
def put_model_settings(request, body: ModelSettingsIn):
    patch = body.model_dump(exclude_unset=True)
    for name in ("parameters", "reasoning", "provider"):
        value = getattr(body, name)
        if value is not None:
            patch[name] = value.model_dump(exclude_unset=True)
    return services.settings_payload(services.update_model_settings(request.auth, patch))


class ActiveProviderOut(Schema):
    model: str
    provider: str = Field(description="The model's provider prefix, e.g. `anthropic`")
    provider_name: str
    routing: dict[str, Any] = Field(description="Your provider routing preferences")
    last_used_provider: str | None = Field(
        description="The upstream provider that served your latest answer"
    )
    last_used_model: str | None


@settings_router.get(
    "/model/active-provider",
    response=ActiveProviderOut,
    summary="The provider side of your active model",
)
def get_active_provider(request):
    return services.active_provider(request.auth)


class SystemPromptIO(Schema):
    system_prompt: str | None = Field(..., max_length=20_000)


@settings_router.get("/system-prompt", response=SystemPromptIO, summary="Your system prompt")
def get_system_prompt(request):
    return {"system_prompt": services.get_system_prompt(request.auth)}


@settings_router.put(
    "/system-prompt",
    response={200: SystemPromptIO, **_ERRORS},
    summary="Set your system prompt (null or blank clears it: the server's prompt applies)",
)
def put_system_prompt(request, body: SystemPromptIO):
    return {"system_prompt": services.set_system_prompt(request.auth, body.system_prompt)}


# Presets -------------------------------------------------------------------------------------


class PresetOut(Schema):
    name: str
    model: str
    parameters: dict[str, Any]
    reasoning: dict[str, Any]
    provider: dict[str, Any]
    system_prompt: str | None
    mcp_servers: dict[str, Any]
    planning_enabled: bool
    model_filters: dict[str, Any]
    is_default: bool
    created_at: datetime
    updated_at: datetime


class PresetListOut(Schema):
    presets: list[PresetOut]


class PresetCreateIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^/]+$")
    set_default: bool = False


class PresetAppliedOut(Schema):
    applied: str
    settings: ModelSettingsOut
    mcp_servers: dict[str, Any]


@presets_router.get("/", response=PresetListOut, summary="All presets (shared by staff)")
def list_presets(request):
    return {"presets": [services.preset_payload(p) for p in services.list_presets()]}


@presets_router.get(
    "/default", response={200: PresetOut, 404: DetailOut}, summary="The default preset"
)
def get_default_preset(request):
    preset = services.get_default_preset()
    if preset is None:
        raise HttpError(404, "No default preset is set")
    return services.preset_payload(preset)


@presets_router.get("/{name}", response={200: PresetOut, 404: DetailOut}, summary="One preset")
@_domain_errors
def get_preset(request, name: str):
    return services.preset_payload(services.get_preset(name))


@presets_router.post(
    "/",
    response={201: PresetOut, **_ERRORS},
    summary="Save your current setup (and the MCP servers' state) as a new preset",
)
@_domain_errors
def create_preset(request, body: PresetCreateIn):
    preset = services.create_preset(request.auth, body.name, make_default=body.set_default)
    return Status(201, services.preset_payload(preset))


@presets_router.put(
    "/{name}",
    response={200: PresetOut, **_ERRORS},
    summary="Save your current setup into an existing preset",
)
@_domain_errors
def save_preset(request, name: str):
    return services.preset_payload(services.save_preset(request.auth, name))


@presets_router.delete("/{name}", response={204: None, 404: DetailOut}, summary="Delete a preset")
@_domain_errors
def delete_preset(request, name: str):
    services.delete_preset(name)
    return Status(204, None)


@presets_router.post(
    "/{name}/set-default",
    response={200: PresetOut, 404: DetailOut},
    summary="Make this the default preset (for new users and new conversations)",
)
@_domain_errors
def set_default_preset(request, name: str):
    return services.preset_payload(services.set_default_preset(name))


@presets_router.post(
    "/{name}/apply",
    response={200: PresetAppliedOut, **_ERRORS},
    summary="Apply a preset to your settings and the MCP servers; 409 (changing nothing) "
    "when it names a model or MCP server that is not available",
)
@_domain_errors
def apply_preset(request, name: str):
    from integrations.services import get_server_state

    applied = services.apply_preset(request.auth, name)
    return {
        "applied": name,
        "settings": services.settings_payload(applied),
        "mcp_servers": get_server_state(),
    }


# Suggestions ---------------------------------------------------------------------------------


class SuggestionIO(Schema):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=100)
    text: str = Field(min_length=1, max_length=4000)


class SuggestionsIO(Schema):
    suggestions: list[SuggestionIO] = Field(max_length=services.MAX_SUGGESTIONS)


@suggestions_router.get("", response=SuggestionsIO, summary="Quick-prompt suggestions")
def list_suggestions(request):
    return {"suggestions": services.list_suggestions()}


@suggestions_router.post(
    "", response={201: SuggestionsIO, **_ERRORS}, summary="Add a suggestion; returns them all"
)
@_domain_errors
def add_suggestion(request, body: SuggestionIO):
    return Status(201, {"suggestions": services.add_suggestion(body.label, body.text)})


@suggestions_router.put(
    "", response={200: SuggestionsIO, **_ERRORS}, summary="Replace all suggestions"
)
@_domain_errors
def replace_suggestions(request, body: SuggestionsIO):
    items = [s.model_dump() for s in body.suggestions]
    return {"suggestions": services.replace_suggestions(items)}


@suggestions_router.delete(
    "/{index}",
    response={200: SuggestionsIO, 404: DetailOut},
    summary="Delete the suggestion at this 0-based index; returns the rest",
)
@_domain_errors
def delete_suggestion(request, index: int):
    return {"suggestions": services.delete_suggestion(index)}
