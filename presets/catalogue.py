"""The OpenRouter model catalogue: fetched, cached, enriched, filtered and summarised in facets.

The catalogue comes from OpenRouter's `GET /models` through chat.openrouter (the one module that
talks to the model API). It is cached per process for MODELS_CACHE_SECONDS and fetched
single-flight: however many requests (on any event loop or thread) miss the cache at once, one
upstream fetch runs and the others wait for its result. When a refresh fails, the last good copy
keeps being served.

Interface used by other apps: `input_modalities(model_id)`.
"""

import asyncio
import concurrent.futures
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings

from chat import openrouter
from chat.openrouter import UpstreamError

log = logging.getLogger(__name__)


# Cache ---------------------------------------------------------------------------------------


@dataclass
class _Snapshot:
    base_url: str
    fetched_at: float
    models: list[dict[str, Any]]
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    haystacks: dict[str, str] = field(default_factory=dict)


_lock = threading.Lock()
_snapshot: _Snapshot | None = None
_inflight: concurrent.futures.Future[_Snapshot] | None = None


def clear_cache() -> None:
    """Forget the cached catalogue (tests, and operators after changing the upstream)."""
    global _snapshot
    with _lock:
        _snapshot = None


def _fresh(snapshot: _Snapshot | None, base_url: str) -> bool:
    return (
        snapshot is not None
        and snapshot.base_url == base_url
        and time.monotonic() - snapshot.fetched_at < settings.MODELS_CACHE_SECONDS
    )


async def _snapshot_now() -> _Snapshot:
    global _snapshot, _inflight
    base_url = settings.OPENROUTER_BASE_URL
    with _lock:
        if _fresh(_snapshot, base_url):
            assert _snapshot is not None
            return _snapshot
        future = _inflight
        leader = future is None
        if future is None:
            future = _inflight = concurrent.futures.Future()
    if not leader:
        # A plain concurrent future, so waiters on other event loops or threads share it too.
        return await asyncio.wrap_future(future)
    try:
        payload = await openrouter.get_json("/models")
        snapshot = _build_snapshot(base_url, payload)
    except BaseException as exc:
        with _lock:
            _inflight = None
            stale = _snapshot if _snapshot is not None and _snapshot.base_url == base_url else None
        if stale is not None and isinstance(exc, UpstreamError):
            log.warning("Model catalogue refresh failed, serving the last copy: %s", exc)
            future.set_result(stale)
            return stale
        if isinstance(exc, asyncio.CancelledError):
            future.set_exception(UpstreamError("The model catalogue fetch was cancelled"))
        else:
            future.set_exception(exc)
        raise
    with _lock:
        _snapshot = snapshot
        _inflight = None
    future.set_result(snapshot)
    return snapshot


def _build_snapshot(base_url: str, payload: Any) -> _Snapshot:
    raw = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(raw, list):
        raise UpstreamError("The model API sent a catalogue without a `data` list")
    models = [enrich(m) for m in raw if isinstance(m, dict) and isinstance(m.get("id"), str)]
    return _Snapshot(
        base_url=base_url,
        fetched_at=time.monotonic(),
        models=models,
        by_id={m["id"]: m for m in models},
        haystacks={m["id"]: _haystack(m) for m in models},
    )


async def get_models() -> list[dict[str, Any]]:
    """Every model of the catalogue, enriched (see `enrich`). Raises UpstreamError."""
    return (await _snapshot_now()).models


def catalogue_or_none() -> dict[str, dict[str, Any]] | None:
    """The catalogue by model id, or None when it cannot be had (no API key, upstream down).

    Validation uses this: checks that need the catalogue are skipped rather than making a
    model API outage block every settings change.
    """
    try:
        return async_to_sync(_snapshot_now)().by_id
    except UpstreamError as exc:
        log.warning("Model catalogue unavailable, skipping model checks: %s", exc)
        return None


def cached_model(model_id: str) -> dict[str, Any] | None:
    """The enriched model from the last fetched catalogue, without fetching (None if unknown)."""
    snapshot = _snapshot
    return snapshot.by_id.get(model_id) if snapshot is not None else None


def input_modalities(model_id: str) -> set[str] | None:
    """The input modalities ("text", "image", "file", ...) of a model from the cached catalogue,
    or None when the model is unknown or the catalogue has not been fetched yet."""
    model = cached_model(model_id)
    if model is None:
        return None
    return set(model["input_modalities"])


# Enrichment ----------------------------------------------------------------------------------


def _price_per_million(raw: Any) -> float | None:
    """OpenRouter prices are strings of USD per token; "-1" marks a variable price (routers)."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    return float(value * 1_000_000)


def _int_or_none(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return None


_SERIES_TOKEN = re.compile(r"[a-z]+")


def _series(model_id: str, architecture: dict[str, Any]) -> str:
    """OpenRouter's own "series" filter is the tokenizer family (GPT, Claude, Llama3, ...);
    models without one get the leading word of their slug ("mistral-large" -> "Mistral")."""
    tokenizer = architecture.get("tokenizer")
    if isinstance(tokenizer, str) and tokenizer.strip():
        return tokenizer.strip()
    slug = model_id.split("/", 1)[-1].lower()
    match = _SERIES_TOKEN.match(slug)
    word = match.group(0) if match else ""
    return word.capitalize() if len(word) > 1 else "Other"


def _modalities(architecture: dict[str, Any]) -> tuple[list[str], list[str]]:
    inputs = architecture.get("input_modalities")
    outputs = architecture.get("output_modalities")
    modality = architecture.get("modality")
    # Older catalogue entries only have "text+image->text".
    if (not isinstance(inputs, list) or not isinstance(outputs, list)) and isinstance(
        modality, str
    ):
        left, _, right = modality.partition("->")
        inputs = inputs if isinstance(inputs, list) else left.split("+")
        outputs = outputs if isinstance(outputs, list) else right.split("+")
    clean = lambda items: [str(i) for i in items or [] if i]  # noqa: E731
    return clean(inputs) or ["text"], clean(outputs) or ["text"]


def enrich(model: dict[str, Any]) -> dict[str, Any]:
    """The upstream entry plus the fields the picker and the filters use."""
    architecture = model.get("architecture") if isinstance(model.get("architecture"), dict) else {}
    top = model.get("top_provider") if isinstance(model.get("top_provider"), dict) else {}
    pricing = model.get("pricing") if isinstance(model.get("pricing"), dict) else {}
    supported = [str(p) for p in model.get("supported_parameters") or [] if p]
    inputs, outputs = _modalities(architecture or {})
    model_id = model["id"]
    name = str(model.get("name") or model_id)
    prompt_price = _price_per_million((pricing or {}).get("prompt"))
    completion_price = _price_per_million((pricing or {}).get("completion"))
    provider_name, sep, _ = name.partition(": ")
    return {
        **model,
        "name": name,
        "provider": model_id.split("/", 1)[0] if "/" in model_id else "",
        "provider_name": provider_name if sep else "",
        "series": _series(model_id, architecture or {}),
        "supports_tools": "tools" in supported,
        "supports_reasoning": "reasoning" in supported or "include_reasoning" in supported,
        "supported_parameters": supported,
        "input_modalities": inputs,
        "output_modalities": outputs,
        "context_length": _int_or_none(model.get("context_length"))
        or _int_or_none((top or {}).get("context_length")),
        "max_completion_tokens": _int_or_none((top or {}).get("max_completion_tokens")),
        "prompt_price_per_million": prompt_price,
        "completion_price_per_million": completion_price,
        "is_free": prompt_price == 0 and completion_price == 0,
    }


def _haystack(model: dict[str, Any]) -> str:
    parts = [
        model["id"],
        model.get("canonical_slug") or "",
        model["name"],
        model["provider"],
        model["series"],
        str(model.get("description") or ""),
    ]
    return " ".join(str(p) for p in parts).casefold()


# Filters -------------------------------------------------------------------------------------


class FilterError(ValueError):
    """A malformed `filters` value; the message names the offending filter."""


_MISSING = object()
_PATH = re.compile(r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$")
_OPERATORS = {"min", "max", "contains", "in", "exists"}
MAX_FILTERS = 50
SORTS: dict[str, tuple[Callable[[dict[str, Any]], Any], bool]] = {
    "name": (lambda m: m["name"].casefold(), False),
    "newest": (lambda m: _int_or_none(m.get("created")) or 0, True),
    "price": (lambda m: _price_key(m), False),
    "-price": (lambda m: _price_key(m, missing=-1.0), True),
    "context": (lambda m: m["context_length"] or 0, False),
    "-context": (lambda m: m["context_length"] or 0, True),
}


def _price_key(model: dict[str, Any], missing: float = float("inf")) -> float:
    prompt = model["prompt_price_per_million"]
    completion = model["completion_price_per_million"]
    if prompt is None:
        return missing
    return prompt + (completion or 0.0)


@dataclass
class Criterion:
    path: list[str]
    test: Callable[[Any], bool]


def _resolve(value: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _number(value: Any) -> float | None:
    """Numbers, and numeric strings (OpenRouter's prices are strings)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _scalar_equals(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(expected, int | float) or isinstance(actual, int | float):
        a, b = _number(actual), _number(expected)
        return a is not None and b is not None and a == b
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.casefold() == expected.casefold()
    return bool(actual == expected)


def _equals(actual: Any, expected: Any) -> bool:
    """Equality; against a list value (modalities, parameters) it means "contains"."""
    if actual is _MISSING:
        return expected is None
    if isinstance(actual, list) and not isinstance(expected, list):
        return any(_scalar_equals(item, expected) for item in actual)
    return _scalar_equals(actual, expected)


def _any_of(expected: list[Any]) -> Callable[[Any], bool]:
    return lambda actual: any(_equals(actual, e) for e in expected)


def _contains(expected: Any) -> Callable[[Any], bool]:
    wanted = expected if isinstance(expected, list) else [expected]

    def test(actual: Any) -> bool:
        if isinstance(actual, str):
            text = actual.casefold()
            return all(str(w).casefold() in text for w in wanted)
        if isinstance(actual, list):
            return all(any(_scalar_equals(item, w) for item in actual) for w in wanted)
        return False

    return test


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _operator_test(name: str, op: str, arg: Any) -> Callable[[Any], bool]:
    if op in {"min", "max"}:
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            raise FilterError(f"Invalid filter {name!r}: {op!r} needs a number")
        bound = float(arg)
        if op == "min":
            return lambda actual: (n := _number(actual)) is not None and n >= bound
        return lambda actual: (n := _number(actual)) is not None and n <= bound
    if op == "contains":
        items = arg if isinstance(arg, list) else [arg]
        if not items or not all(_is_scalar(i) and i is not None for i in items):
            raise FilterError(f"Invalid filter {name!r}: 'contains' needs a value or a list")
        return _contains(arg)
    if op == "in":
        if not isinstance(arg, list) or not all(_is_scalar(i) for i in arg):
            raise FilterError(f"Invalid filter {name!r}: 'in' needs a list of values")
        return _any_of(arg)
    # exists
    if not isinstance(arg, bool):
        raise FilterError(f"Invalid filter {name!r}: 'exists' needs true or false")
    return lambda actual: (actual is not _MISSING and actual is not None) == arg


def _criterion(name: str, spec: Any) -> Criterion:
    if not _PATH.match(name):
        raise FilterError(f"Invalid filter {name!r}: a filter key is a dotted path")
    path = name.split(".")
    if _is_scalar(spec):
        return Criterion(path, lambda actual: _equals(actual, spec))
    if isinstance(spec, list):
        if not all(_is_scalar(i) for i in spec):
            raise FilterError(f"Invalid filter {name!r}: a list means any of these values")
        return Criterion(path, _any_of(spec))
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - _OPERATORS)
        if unknown or not spec:
            raise FilterError(
                f"Invalid filter {name!r}: unknown operator {', '.join(map(repr, unknown))}; "
                f"use {', '.join(sorted(_OPERATORS))}"
                if unknown
                else f"Invalid filter {name!r}: no operator given"
            )
        tests = [_operator_test(name, op, arg) for op, arg in spec.items()]
        return Criterion(path, lambda actual: all(t(actual) for t in tests))
    raise FilterError(f"Invalid filter {name!r}: unsupported criteria")


def parse_filters(raw: str | dict[str, Any] | None) -> list[Criterion]:
    """`filters`: a JSON object of dotted path -> criteria (a value: equality; a list: any of;
    an object of operators min/max/contains/in/exists). Raises FilterError naming the filter."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise FilterError("Invalid filters: not a JSON object") from None
    if not isinstance(raw, dict):
        raise FilterError("Invalid filters: not a JSON object")
    if len(raw) > MAX_FILTERS:
        raise FilterError(f"Invalid filters: at most {MAX_FILTERS} filters")
    return [_criterion(str(name), spec) for name, spec in raw.items()]


@dataclass
class Selection:
    models: list[dict[str, Any]]
    total: int
    base_count: int


def _select(
    snapshot: _Snapshot, tools_only: bool, search: str, criteria: list[Criterion]
) -> Selection:
    models = snapshot.models
    total = len(models)
    if tools_only:
        models = [m for m in models if m["supports_tools"]]
    base_count = len(models)
    words = search.casefold().split()
    if words:
        models = [m for m in models if all(w in snapshot.haystacks[m["id"]] for w in words)]
    for criterion in criteria:
        models = [m for m in models if criterion.test(_resolve(m, criterion.path))]
    return Selection(models, total, base_count)


async def select_models(
    *,
    tools_only: bool = False,
    search: str = "",
    filters: str | dict[str, Any] | None = None,
    sort: str | None = None,
) -> Selection:
    """The catalogue narrowed by `tools_only`, every word of `search`, and `filters`.

    `total` is the catalogue's size, `base_count` what is left after `tools_only`, and the
    selection's length what is left after the search and filters too.
    """
    criteria = parse_filters(filters)  # before any fetch: a malformed filter costs nothing
    if sort is not None and sort not in SORTS:
        raise FilterError(f"Invalid sort {sort!r}: use one of {', '.join(SORTS)}")
    snapshot = await _snapshot_now()
    selection = _select(snapshot, tools_only, search, criteria)
    if sort is not None:
        key, reverse = SORTS[sort]
        selection.models = sorted(selection.models, key=key, reverse=reverse)
    return selection


# Facets --------------------------------------------------------------------------------------


def _counts(values: Counter[str]) -> list[dict[str, Any]]:
    return [
        {"value": value, "count": count}
        for value, count in sorted(values.items(), key=lambda item: (-item[1], item[0]))
    ]


def _range(values: list[float | int | None]) -> dict[str, Any]:
    known = [v for v in values if v is not None]
    return {"min": min(known) if known else None, "max": max(known) if known else None}


def facets(models: list[dict[str, Any]]) -> dict[str, Any]:
    """What the picker's filters can offer, with how many models each choice keeps."""
    inputs: Counter[str] = Counter()
    outputs: Counter[str] = Counter()
    parameters: Counter[str] = Counter()
    series: Counter[str] = Counter()
    providers: Counter[str] = Counter()
    for m in models:
        inputs.update(set(m["input_modalities"]))
        outputs.update(set(m["output_modalities"]))
        parameters.update(set(m["supported_parameters"]))
        series[m["series"]] += 1
        if m["provider"]:
            providers[m["provider"]] += 1
    return {
        "count": len(models),
        "tools_count": sum(1 for m in models if m["supports_tools"]),
        "modalities": {"input": _counts(inputs), "output": _counts(outputs)},
        "supported_parameters": _counts(parameters),
        "series": _counts(series),
        "providers": _counts(providers),
        "context_length": _range([m["context_length"] for m in models]),
        "prompt_price_per_million": _range([m["prompt_price_per_million"] for m in models]),
        "completion_price_per_million": _range([m["completion_price_per_million"] for m in models]),
    }
