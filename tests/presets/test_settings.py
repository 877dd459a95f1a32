import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat.models import Message
from chat.services import create_api_token
from presets import services
from presets.models import Preset, UserModelSettings
from tests.sse import read_stream

pytestmark = pytest.mark.django_db


def put(client, path, body):
    return client.put(path, body, content_type="application/json")


def put_settings(client, **body):
    return put(client, "/api/settings/model", body)


# GET / PUT /api/settings/model ----------------------------------------------------------------


def test_new_user_gets_the_server_defaults(api, fake_openrouter):
    response = api.get("/api/settings/model")
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "fake/ok" and body["model_is_default"] is True
    assert body["default_model"] == "fake/ok"
    assert body["parameters"] == body["reasoning"] == body["provider"] == {}
    assert body["planning_enabled"] is False
    assert body["favourites"] == [] and body["model_filters"] == {}


def test_settings_need_authentication(fake_openrouter):
    assert Client().get("/api/settings/model").status_code == 401
    assert put_settings(Client(), model="fake/ok").status_code == 401
    assert Client().get("/api/settings/system-prompt").status_code == 401


def test_put_is_a_partial_update(api, catalogue_models):
    response = put_settings(api, model="openai/gpt-4o-mini", parameters={"temperature": 0.4})
    assert response.status_code == 200
    assert response.json()["model"] == "openai/gpt-4o-mini"
    response = put_settings(api, parameters={"top_p": 0.9, "seed": 7})
    body = response.json()
    assert body["model"] == "openai/gpt-4o-mini", "fields not sent stay"
    assert body["parameters"] == {"temperature": 0.4, "top_p": 0.9, "seed": 7}
    body = put_settings(api, parameters={"temperature": None}).json()
    assert body["parameters"] == {"top_p": 0.9, "seed": 7}, "null removes a key"
    assert api.get("/api/settings/model").json() == body


def test_every_documented_setting_round_trips(api, catalogue_models):
    wanted = {
        "model": "fake/ok",
        "parameters": {
            "temperature": 1.2,
            "top_p": 0.8,
            "top_k": 40,
            "max_tokens": 1000,
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
            "repetition_penalty": 1.1,
            "seed": 42,
            "stop": ["###", "END"],
        },
        "reasoning": {"effort": "high", "exclude": True},
        "provider": {
            "order": ["anthropic", "openai"],
            "allow_fallbacks": False,
            "only": ["anthropic", "openai", "google"],
            "ignore": ["deepinfra"],
            "data_collection": "deny",
            "zdr": True,
            "sort": "throughput",
        },
        "planning_enabled": True,
        "model_filters": {"search": "claude", "tools_only": True, "sort": "-context"},
        "favourites": ["fake/ok", "openai/gpt-4o-mini"],
    }
    response = put_settings(api, **wanted)
    assert response.status_code == 200, response.content
    body = api.get("/api/settings/model").json()
    assert {k: body[k] for k in wanted} == {**wanted}
    assert body["model_is_default"] is False


def test_model_null_returns_to_the_server_default(api, catalogue_models):
    put_settings(api, model="openai/gpt-4o-mini")
    body = put_settings(api, model=None).json()
    assert body["model"] == "fake/ok" and body["model_is_default"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"parameters": {"temperature": 2.5}}, "temperature"),
        ({"parameters": {"top_p": 0}}, "top_p"),
        ({"parameters": {"max_tokens": 0}}, "max_tokens"),
        ({"parameters": {"frequency_penalty": -3}}, "frequency_penalty"),
        ({"parameters": {"seed": "abc"}}, "seed"),
        ({"parameters": {"stop": ["a", "b", "c", "d", "e"]}}, "stop"),
        ({"parameters": {"logit_bias_typo": 1}}, "logit_bias_typo"),
        ({"reasoning": {"effort": "extreme"}}, "effort"),
        ({"reasoning": {"effort": "low", "max_tokens": 100}}, "reasoning"),
        ({"provider": {"sort": "cheapest"}}, "sort"),
        ({"provider": {"data_collection": "maybe"}}, "data_collection"),
        ({"temperature": 0.5}, "temperature"),
        ({"favourites": "fake/ok"}, "favourites"),
    ],
)
def test_invalid_values_are_422_naming_the_field(api, catalogue_models, body, field):
    before = api.get("/api/settings/model").json()
    response = put_settings(api, **body)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])
    assert api.get("/api/settings/model").json() == before, "nothing changed"


def test_unknown_model_is_400_naming_it(api, catalogue_models):
    response = put_settings(api, model="nobody/nothing")
    assert response.status_code == 400
    assert response.json()["detail"] == "model: unknown model 'nobody/nothing'"


def test_parameter_the_model_does_not_support_is_400(api, catalogue_models):
    put_settings(api, model="openai/gpt-4o-mini")
    response = put_settings(api, parameters={"top_k": 20})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("parameters.top_k: not supported by openai/gpt-4o-mini")
    assert api.get("/api/settings/model").json()["parameters"] == {}


def test_max_tokens_above_the_models_limit_is_400(api, catalogue_models):
    put_settings(api, model="openai/gpt-4o-mini")
    response = put_settings(api, parameters={"max_tokens": 20000})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "parameters.max_tokens: openai/gpt-4o-mini allows at most 16384 tokens"
    )
    assert put_settings(api, parameters={"max_tokens": 16384}).status_code == 200


def test_reasoning_on_a_model_without_it_is_400(api, catalogue_models):
    put_settings(api, model="openai/gpt-4o-mini")
    response = put_settings(api, reasoning={"effort": "high"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("reasoning: openai/gpt-4o-mini")


def test_switching_models_keeps_older_values_and_reports_unsupported_ones(api, catalogue_models):
    put_settings(api, model="anthropic/claude-sonnet-4", parameters={"top_k": 20})
    response = put_settings(api, model="openai/gpt-4o-mini")
    assert response.status_code == 200
    body = response.json()
    assert body["parameters"] == {"top_k": 20}
    assert body["unsupported_parameters"] == ["top_k"]


def test_effort_and_budget_replace_each_other(api, catalogue_models):
    put_settings(api, model="fake/reasoning", reasoning={"effort": "low", "exclude": False})
    body = put_settings(api, reasoning={"max_tokens": 2048}).json()
    assert body["reasoning"] == {"max_tokens": 2048, "exclude": False}
    body = put_settings(api, reasoning={"effort": "medium"}).json()
    assert body["reasoning"] == {"effort": "medium", "exclude": False}


def test_settings_are_checked_for_ranges_even_when_the_catalogue_is_unavailable(
    api, fake_openrouter, settings
):
    settings.OPENROUTER_BASE_URL = "http://127.0.0.1:9/api/v1"
    assert put_settings(api, model="any/model", parameters={"top_k": 5}).status_code == 200
    assert put_settings(api, parameters={"temperature": 9}).status_code == 422


def test_settings_are_per_user(api, catalogue_models, other_user):
    put_settings(api, model="openai/gpt-4o-mini", parameters={"temperature": 0.1})
    other = Client(headers={"Authorization": f"Bearer {create_api_token(other_user)}"})
    body = other.get("/api/settings/model").json()
    assert body["model"] == "fake/ok" and body["parameters"] == {}
    put_settings(other, parameters={"temperature": 1.9})
    assert api.get("/api/settings/model").json()["parameters"] == {"temperature": 0.1}


def test_planning_flag_is_what_the_planner_reads(api, catalogue_models, user):
    assert services.planning_enabled_for(user) is False
    put_settings(api, planning_enabled=True)
    assert services.planning_enabled_for(user) is True


def test_favourites_toggle(user, catalogue_models):
    assert services.toggle_favourite(user, "fake/ok") == ["fake/ok"]
    assert services.toggle_favourite(user, "openai/gpt-4o-mini") == [
        "fake/ok",
        "openai/gpt-4o-mini",
    ]
    assert services.toggle_favourite(user, "fake/ok") == ["openai/gpt-4o-mini"]


# active-provider --------------------------------------------------------------------------------


def test_active_provider_before_any_answer(api, catalogue_models):
    put_settings(api, model="anthropic/claude-sonnet-4", provider={"order": ["anthropic"]})
    api.get("/api/models")  # the provider's display name comes from the catalogue
    body = api.get("/api/settings/model/active-provider").json()
    assert body == {
        "model": "anthropic/claude-sonnet-4",
        "provider": "anthropic",
        "provider_name": "Anthropic",
        "routing": {"order": ["anthropic"]},
        "last_used_provider": None,
        "last_used_model": None,
    }


def test_active_provider_reports_the_provider_of_the_latest_answer(api, user, other_user):
    from chat.models import Conversation

    mine = Conversation.objects.create(user=user)
    Message.objects.create(
        conversation=mine, role="assistant", model="fake/ok", routing={"provider": "Groq"}
    )
    theirs = Conversation.objects.create(user=other_user)
    Message.objects.create(
        conversation=theirs, role="assistant", model="x/y", routing={"provider": "Secret"}
    )
    body = api.get("/api/settings/model/active-provider").json()
    assert body["last_used_provider"] == "Groq" and body["last_used_model"] == "fake/ok"


# System prompt ----------------------------------------------------------------------------------


def test_system_prompt_set_and_cleared(api):
    assert api.get("/api/settings/system-prompt").json() == {"system_prompt": None}
    response = put(api, "/api/settings/system-prompt", {"system_prompt": "Be brief."})
    assert response.status_code == 200 and response.json() == {"system_prompt": "Be brief."}
    assert api.get("/api/settings/system-prompt").json() == {"system_prompt": "Be brief."}
    response = put(api, "/api/settings/system-prompt", {"system_prompt": None})
    assert response.json() == {"system_prompt": None}
    assert api.get("/api/settings/system-prompt").json() == {"system_prompt": None}
    put(api, "/api/settings/system-prompt", {"system_prompt": "x"})
    assert put(api, "/api/settings/system-prompt", {"system_prompt": "  "}).json() == {
        "system_prompt": None
    }


def test_system_prompt_validation(api):
    assert put(api, "/api/settings/system-prompt", {}).status_code == 422
    too_long = put(api, "/api/settings/system-prompt", {"system_prompt": "x" * 20001})
    assert too_long.status_code == 422
    assert put(api, "/api/settings/system-prompt", {"system_prompt": 5}).status_code == 422


# The chat turn sends exactly the saved settings -------------------------------------------------


async def stream(client, **body):
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    response = await client.post("/api/chat/stream", body, content_type="application/json")
    assert response.status_code == 200
    return await read_stream(response)


@pytest.mark.django_db(transaction=True)
async def test_chat_turn_sends_the_saved_settings(
    aapi, catalogue_models, fake_openrouter, user, settings
):
    settings.OPENROUTER_SYSTEM_PROMPT = "Server prompt."
    await sync_to_async(services.update_model_settings)(
        user,
        {
            "model": "fake/reasoning",
            "parameters": {"temperature": 0.2, "seed": 3, "stop": ["END"]},
            "reasoning": {"effort": "low", "exclude": True},
            "provider": {"order": ["a", "b"], "allow_fallbacks": False, "sort": "latency"},
        },
    )
    await sync_to_async(services.set_system_prompt)(user, "You are a pirate.")
    await stream(aapi)
    sent = fake_openrouter.requests[-1]["body"]
    assert sent["model"] == "fake/reasoning"
    assert sent["temperature"] == 0.2 and sent["seed"] == 3 and sent["stop"] == ["END"]
    assert sent["reasoning"] == {"effort": "low", "exclude": True}
    assert sent["provider"] == {"order": ["a", "b"], "allow_fallbacks": False, "sort": "latency"}
    assert sent["messages"][0]["content"].startswith("You are a pirate.")
    assert "Server prompt." not in sent["messages"][0]["content"]
    assert "top_p" not in sent, "nothing the user did not set"


@pytest.mark.django_db(transaction=True)
async def test_request_body_overrides_the_saved_settings(
    aapi, catalogue_models, fake_openrouter, user
):
    await sync_to_async(services.update_model_settings)(
        user,
        {
            "model": "fake/reasoning",
            "parameters": {"temperature": 0.2, "seed": 3},
            "provider": {"sort": "price"},
        },
    )
    await stream(aapi, model="fake/ok", temperature=1.5, provider={"sort": "latency"})
    sent = fake_openrouter.requests[-1]["body"]
    assert sent["model"] == "fake/ok"
    assert sent["temperature"] == 1.5 and sent["seed"] == 3
    assert sent["provider"] == {"sort": "latency"}


@pytest.mark.django_db(transaction=True)
async def test_without_a_user_prompt_the_server_prompt_is_sent(
    aapi, fake_openrouter, user, settings
):
    settings.OPENROUTER_SYSTEM_PROMPT = "Server prompt."
    await stream(aapi)
    sent = fake_openrouter.requests[-1]["body"]
    assert sent["messages"][0]["content"].startswith("Server prompt.")
    assert sent["model"] == "fake/ok"


# Default preset for new users -------------------------------------------------------------------


def test_a_new_user_starts_from_the_default_preset(make_user):
    Preset.objects.create(
        name="House",
        model="fake/reasoning",
        parameters={"temperature": 0.3},
        system_prompt="House rules.",
        planning_enabled=True,
        is_default=True,
    )
    newcomer = make_user("newcomer")
    loaded = services.get_user_settings(newcomer)
    assert loaded.model == "fake/reasoning"
    assert loaded.parameters == {"temperature": 0.3}
    assert loaded.system_prompt == "House rules."
    assert loaded.planning_enabled is True
    assert UserModelSettings.objects.filter(user=newcomer).count() == 1


def test_changes_the_model_cannot_refuse_do_not_fetch_the_catalogue(
    api, catalogue_models, fake_openrouter
):
    put_settings(api, favourites=["fake/ok"], planning_enabled=True, model_filters={"q": "x"})
    put_settings(api, parameters={"temperature": None}, provider={"sort": "price"})
    assert api.get("/api/settings/model").json()["favourites"] == ["fake/ok"]
    assert fake_openrouter.models_fetches == 0
    put_settings(api, parameters={"temperature": 1})
    assert fake_openrouter.models_fetches == 1
