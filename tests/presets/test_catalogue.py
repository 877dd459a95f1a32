import asyncio
import json
import threading
from collections import Counter
from decimal import Decimal
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from presets import catalogue

pytestmark = pytest.mark.django_db


def get_models(api, **params):
    query = "&".join(
        f"{k}={quote(json.dumps(v) if isinstance(v, dict) else str(v))}" for k, v in params.items()
    )
    return api.get(f"/api/models?{query}")


def ids(response) -> set[str]:
    return {m["id"] for m in response.json()["data"]}


def per_million(raw: str) -> float:
    return float(Decimal(raw) * 1_000_000)


# Listing and enrichment -------------------------------------------------------------------------


def test_models_lists_the_whole_catalogue_enriched(api, catalogue_models):
    response = api.get("/api/models")
    assert response.status_code == 200
    body = response.json()
    assert len(body["data"]) == len(catalogue_models) > 300
    assert body["metadata"] == {
        "total": len(catalogue_models),
        "base_count": len(catalogue_models),
        "count": len(catalogue_models),
    }
    gpt = next(m for m in body["data"] if m["id"] == "openai/gpt-4o-mini")
    assert gpt["supports_tools"] is True
    assert gpt["input_modalities"] == ["text", "image", "file"]
    assert gpt["output_modalities"] == ["text"]
    assert gpt["context_length"] == 128000
    assert gpt["max_completion_tokens"] == 16384
    assert gpt["prompt_price_per_million"] == 0.15
    assert gpt["completion_price_per_million"] == 0.6
    assert gpt["provider"] == "openai" and gpt["provider_name"] == "OpenAI"
    assert gpt["series"] == "GPT"
    # The upstream fields are kept as they are.
    assert gpt["pricing"]["input_cache_read"] == "0.000000075"
    assert gpt["architecture"]["tokenizer"] == "GPT"


def test_variable_price_free_and_toolless_models_are_enriched_honestly(api, catalogue_models):
    data = {m["id"]: m for m in api.get("/api/models").json()["data"]}
    auto = data["openrouter/auto"]
    assert auto["prompt_price_per_million"] is None  # "-1" means variable, not negative
    assert auto["supports_tools"] is False
    assert auto["context_length"] == 2000000
    free = data["meta-llama/llama-3.1-8b-instruct:free"]
    assert free["is_free"] is True and free["prompt_price_per_million"] == 0.0
    assert free["series"] == "Llama3"
    assert free["supports_tools"] is False
    sonnet = data["anthropic/claude-sonnet-4"]
    assert sonnet["supports_reasoning"] is True
    assert sonnet["prompt_price_per_million"] == 3.0
    assert sonnet["completion_price_per_million"] == 15.0
    # Without a tokenizer the series is the leading word of the slug; modalities default to text.
    fake = data["fake/reasoning"]
    assert fake["series"] == "Reasoning" and fake["input_modalities"] == ["text"]


def test_models_need_authentication(catalogue_models):
    assert Client().get("/api/models").status_code == 401
    assert Client().get("/api/models/metadata").status_code == 401


def test_models_without_an_api_key_is_503(api, fake_openrouter, settings):
    settings.OPENROUTER_API_KEY = ""
    response = api.get("/api/models")
    assert response.status_code == 503
    assert "OPENROUTER_API_KEY" in response.json()["detail"]
    assert fake_openrouter.models_fetches == 0


def test_upstream_down_is_502(api, fake_openrouter, settings):
    settings.OPENROUTER_BASE_URL = "http://127.0.0.1:9/api/v1"  # discard port: nothing listens
    response = api.get("/api/models")
    assert response.status_code == 502
    assert response.json()["detail"] == "Could not reach the model API"


# Filters ---------------------------------------------------------------------------------------


def test_tools_only_keeps_models_that_accept_tools(api, catalogue_models):
    expected = {m["id"] for m in catalogue_models if "tools" in m.get("supported_parameters", [])}
    response = get_models(api, tools_only="true")
    assert ids(response) == expected
    assert response.json()["metadata"] == {
        "total": len(catalogue_models),
        "base_count": len(expected),
        "count": len(expected),
    }


def test_search_needs_every_word_in_any_field(api, catalogue_models):
    response = get_models(api, search="Claude  SONNET")
    found = ids(response)
    assert "anthropic/claude-sonnet-4" in found
    for model in response.json()["data"]:
        text = f"{model['id']} {model['name']} {model.get('description')}".lower()
        assert "claude" in text and "sonnet" in text
    expected = {
        m["id"]
        for m in catalogue_models
        if all(
            w
            in f"{m['id']} {m.get('canonical_slug', '')} {m['name']} {m.get('description', '')}"
            f" {m['id'].split('/')[0]} {m.get('architecture', {}).get('tokenizer', '')}".lower()
            for w in ("claude", "sonnet")
        )
    }
    assert found == expected
    assert response.json()["metadata"]["count"] == len(found)
    assert response.json()["metadata"]["base_count"] == len(catalogue_models)


def test_search_and_tools_only_combine(api, catalogue_models):
    found = ids(get_models(api, search="vision", tools_only="true"))
    expected = {
        m["id"]
        for m in catalogue_models
        if "vision" in (m.get("description") or "").lower()
        and "tools" in m.get("supported_parameters", [])
    }
    assert found == expected and found


def test_filter_equality_on_a_list_means_contains(api, catalogue_models):
    found = ids(get_models(api, filters={"input_modalities": "image"}))
    expected = {
        m["id"]
        for m in catalogue_models
        if "image" in m.get("architecture", {}).get("input_modalities", [])
    }
    assert found == expected
    assert "openai/gpt-4o-mini" in found and "meta-llama/llama-3.1-8b-instruct:free" not in found


def test_filter_dotted_path_equality_ignores_case(api, catalogue_models):
    found = ids(get_models(api, filters={"architecture.tokenizer": "claude"}))
    expected = {
        m["id"] for m in catalogue_models if m.get("architecture", {}).get("tokenizer") == "Claude"
    }
    assert found == expected and found


def test_filter_list_means_any_of(api, catalogue_models):
    found = ids(get_models(api, filters={"provider": ["anthropic", "x-ai"]}))
    expected = {m["id"] for m in catalogue_models if m["id"].split("/")[0] in {"anthropic", "x-ai"}}
    assert found == expected and found


def test_filter_min_and_max_on_numbers_and_price_strings(api, catalogue_models):
    found = ids(
        get_models(
            api,
            filters={
                "context_length": {"min": 100000, "max": 262144},
                "pricing.prompt": {"max": 0.000001},
            },
        )
    )
    expected = {
        m["id"]
        for m in catalogue_models
        if 100000 <= m["context_length"] <= 262144
        and m.get("pricing", {}).get("prompt") is not None
        and float(m["pricing"]["prompt"]) <= 0.000001
    }
    assert found == expected and found
    # "-1" (variable price) is a number too, and below any max: the enriched price is the
    # field for "cheaper than", since it is null for variable prices.
    cheap = ids(get_models(api, filters={"prompt_price_per_million": {"max": 1}}))
    assert "openrouter/auto" not in cheap
    assert cheap == {
        m["id"]
        for m in catalogue_models
        if m.get("pricing", {}).get("prompt") is not None
        and 0 <= per_million(m["pricing"]["prompt"]) <= 1
    }


def test_filter_contains_in_and_exists(api, catalogue_models):
    found = ids(get_models(api, filters={"description": {"contains": "GOOD AT CODE"}}))
    assert found == {
        m["id"] for m in catalogue_models if "good at code" in m.get("description", "")
    }
    assert found

    both = ids(get_models(api, filters={"supported_parameters": {"contains": ["tools", "seed"]}}))
    assert both == {
        m["id"]
        for m in catalogue_models
        if {"tools", "seed"} <= set(m.get("supported_parameters", []))
    }

    series = ids(get_models(api, filters={"series": {"in": ["Grok", "Nova"]}}))
    assert series == {
        m["id"]
        for m in catalogue_models
        if m.get("architecture", {}).get("tokenizer") in {"Grok", "Nova"}
    }

    unlimited = ids(
        get_models(api, filters={"top_provider.max_completion_tokens": {"exists": False}})
    )
    assert unlimited == {
        m["id"]
        for m in catalogue_models
        if (m.get("top_provider") or {}).get("max_completion_tokens") is None
    }
    assert "openrouter/auto" in unlimited


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ("not json", "filters"),
        ("[1, 2]", "filters"),
        ('{"context_length": {"above": 5}}', "'context_length'"),
        ('{"context_length": {"min": "big"}}', "'context_length'"),
        ('{"pricing.prompt": {}}', "'pricing.prompt'"),
        ('{"top_provider": {"exists": "yes"}}', "'top_provider'"),
        ('{"series": {"in": "Grok"}}', "'series'"),
        ('{"a..b": 1}', "'a..b'"),
        ('{"tags": [{"nested": 1}]}', "'tags'"),
    ],
)
def test_malformed_filter_is_400_naming_it(api, fake_openrouter, filters, named):
    response = api.get(f"/api/models?filters={quote(filters)}")
    assert response.status_code == 400
    assert named in response.json()["detail"]
    assert fake_openrouter.models_fetches == 0, "a bad filter is refused before any fetch"


def test_unknown_sort_is_400(api, fake_openrouter):
    response = api.get("/api/models?sort=random")
    assert response.status_code == 400
    assert "'random'" in response.json()["detail"]


def test_sorts_by_price_context_and_newest(api, catalogue_models):
    by_price = get_models(api, sort="price").json()["data"]
    prices = [m["prompt_price_per_million"] for m in by_price]
    known = [p for p in prices if p is not None]
    assert prices[: len(known)] == known, "unknown prices sort last"
    totals = [
        m["prompt_price_per_million"] + (m["completion_price_per_million"] or 0)
        for m in by_price[: len(known)]
    ]
    assert totals == sorted(totals)

    by_context = get_models(api, sort="-context").json()["data"]
    contexts = [m["context_length"] or 0 for m in by_context]
    assert contexts == sorted(contexts, reverse=True)
    assert by_context[0]["id"] == "openrouter/auto"

    newest = get_models(api, sort="newest").json()["data"]
    created = [m.get("created") or 0 for m in newest]
    assert created == sorted(created, reverse=True)


# Facets ----------------------------------------------------------------------------------------


def test_metadata_facets_count_the_catalogue(api, catalogue_models):
    response = api.get("/api/models/metadata")
    assert response.status_code == 200
    facets = response.json()
    assert facets["total"] == facets["count"] == len(catalogue_models)

    inputs = Counter(
        modality
        for m in catalogue_models
        for modality in set(m.get("architecture", {}).get("input_modalities") or ["text"])
    )
    assert {f["value"]: f["count"] for f in facets["modalities"]["input"]} == dict(inputs)
    assert {f["value"] for f in facets["modalities"]["output"]} == {"text", "image"}

    tokenizers = Counter(m.get("architecture", {}).get("tokenizer") for m in catalogue_models)
    series = {f["value"]: f["count"] for f in facets["series"]}
    assert series["Claude"] == tokenizers["Claude"]
    assert series["Llama3"] == tokenizers["Llama3"]

    providers = Counter(m["id"].split("/")[0] for m in catalogue_models)
    assert {f["value"]: f["count"] for f in facets["providers"]} == dict(providers)
    counts = [f["count"] for f in facets["providers"]]
    assert counts == sorted(counts, reverse=True)

    tools = sum(1 for m in catalogue_models if "tools" in m.get("supported_parameters", []))
    assert facets["tools_count"] == tools
    params = {f["value"]: f["count"] for f in facets["supported_parameters"]}
    assert params["tools"] == tools

    assert facets["context_length"] == {
        "min": min(m["context_length"] for m in catalogue_models),
        "max": max(m["context_length"] for m in catalogue_models),
    }
    prices = [
        per_million(m["pricing"]["prompt"])
        for m in catalogue_models
        if float(m.get("pricing", {}).get("prompt", "-1")) >= 0
    ]
    assert facets["prompt_price_per_million"]["min"] == 0.0
    assert facets["prompt_price_per_million"]["max"] == pytest.approx(max(prices))


def test_metadata_of_a_selection(api, catalogue_models):
    response = api.get(
        "/api/models/metadata?tools_only=true&filters=" + quote('{"provider": "anthropic"}')
    )
    facets = response.json()
    assert facets["total"] == len(catalogue_models)
    expected = [
        m
        for m in catalogue_models
        if m["id"].startswith("anthropic/") and "tools" in m.get("supported_parameters", [])
    ]
    assert facets["count"] == len(expected) > 0
    assert facets["providers"] == [{"value": "anthropic", "count": len(expected)}]


def test_metadata_with_a_malformed_filter_is_400(api, fake_openrouter):
    response = api.get("/api/models/metadata?filters=" + quote('{"x": {"max": true}}'))
    assert response.status_code == 400
    assert "'x'" in response.json()["detail"]


# Cache -----------------------------------------------------------------------------------------


def test_catalogue_is_cached_between_requests(api, catalogue_models, fake_openrouter):
    for _ in range(3):
        assert api.get("/api/models").status_code == 200
    api.get("/api/models/metadata")
    assert fake_openrouter.models_fetches == 1


def test_expired_cache_is_fetched_again(api, catalogue_models, fake_openrouter, settings):
    settings.MODELS_CACHE_SECONDS = 0
    api.get("/api/models")
    api.get("/api/models")
    assert fake_openrouter.models_fetches == 2


def test_a_new_upstream_url_is_not_served_from_the_old_cache(api, catalogue_models, settings):
    api.get("/api/models")
    settings.OPENROUTER_BASE_URL = "http://127.0.0.1:9/api/v1"
    assert api.get("/api/models").status_code == 502


@pytest.mark.django_db(transaction=True)
async def test_concurrent_requests_share_one_upstream_fetch(
    aapi, catalogue_models, fake_openrouter
):
    fake_openrouter.models_delay = 0.2  # every request arrives while the fetch is in flight
    responses = await asyncio.gather(*(aapi.get("/api/models") for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert {len(r.json()["data"]) for r in responses} == {len(catalogue_models)}
    assert fake_openrouter.models_fetches == 1


def test_threads_on_their_own_event_loops_share_one_fetch(catalogue_models, fake_openrouter):
    fake_openrouter.models_delay = 0.2
    results: list[int] = []
    barrier = threading.Barrier(6)

    def fetch():
        barrier.wait()
        results.append(len(async_to_sync(catalogue.get_models)()))

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [len(catalogue_models)] * 6
    assert fake_openrouter.models_fetches == 1


def test_a_failed_refresh_keeps_serving_the_last_catalogue(
    api, catalogue_models, fake_openrouter, settings
):
    api.get("/api/models")
    settings.MODELS_CACHE_SECONDS = 0
    fake_openrouter.models = "not a list"  # the next fetch gets a malformed catalogue
    response = api.get("/api/models")
    assert response.status_code == 200
    assert len(response.json()["data"]) == len(catalogue_models)
    assert fake_openrouter.models_fetches == 2


def test_input_modalities_reads_the_cached_catalogue(api, catalogue_models):
    assert catalogue.input_modalities("openai/gpt-4o-mini") is None, "nothing fetched yet"
    api.get("/api/models")
    assert catalogue.input_modalities("openai/gpt-4o-mini") == {"text", "image", "file"}
    assert catalogue.input_modalities("meta-llama/llama-3.1-8b-instruct:free") == {"text"}
    assert catalogue.input_modalities("nobody/nothing") is None
