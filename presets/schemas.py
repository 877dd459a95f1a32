"""Validated shapes of the model settings, in OpenRouter's own field names.

The same schemas check API bodies, presets edited in the admin, and presets being applied.
Ranges are OpenRouter's documented ones.
"""

from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import BaseModel, ConfigDict, Field, model_validator

ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class ModelParameters(Schema):
    """Sampling parameters; every field optional. In a PUT, null removes a saved value."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    top_a: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    seed: int | None = None
    stop: Annotated[str, Field(max_length=200)] | list[ShortText] | None = Field(None, max_length=4)


class ReasoningSettings(Schema):
    """OpenRouter's `reasoning` object: effort or a token budget, and whether to hide it."""

    model_config = ConfigDict(extra="forbid")

    effort: Literal["minimal", "low", "medium", "high"] | None = None
    max_tokens: int | None = Field(None, ge=1)
    exclude: bool | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _effort_or_budget(self) -> "ReasoningSettings":
        if self.effort is not None and self.max_tokens is not None:
            raise ValueError("set reasoning effort or max_tokens, not both")
        return self


class ProviderRouting(Schema):
    """OpenRouter's `provider` object (provider routing preferences)."""

    model_config = ConfigDict(extra="forbid")

    order: list[ShortText] | None = Field(None, max_length=50)
    allow_fallbacks: bool | None = None
    require_parameters: bool | None = None
    data_collection: Literal["allow", "deny"] | None = None
    zdr: bool | None = None
    only: list[ShortText] | None = Field(None, max_length=50)
    ignore: list[ShortText] | None = Field(None, max_length=50)
    sort: Literal["price", "throughput", "latency"] | None = None
    quantizations: (
        list[Literal["int4", "int8", "fp4", "fp6", "fp8", "fp16", "bf16", "fp32", "unknown"]] | None
    ) = None


def compact(schema: BaseModel) -> dict[str, Any]:
    """The values that are set, as stored and as sent upstream."""
    return schema.model_dump(exclude_none=True)
