import pytest
from django.test import Client

from chat.services import create_api_token
from integrations.models import McpServer
from integrations.services import get_server_state
from presets import services
from presets.models import Preset

pytestmark = pytest.mark.django_db


def put(client, path, body):
    return client.put(path, body, content_type="application/json")


def post(client, path, body=None):
    return client.post(path, body or {}, content_type="application/json")


@pytest.fixture
def servers():
    McpServer.objects.create(server_id="files", url="http://127.0.0.1:9/mcp")
    McpServer.objects.create(
        server_id="web", url="http://127.0.0.1:9/mcp", enabled=False, disabled_tools=["fetch"]
    )


def full_setup(api):
    """Set every part of the state a preset captures, to non-default values."""
    response = put(
        api,
        "/api/settings/model",
        {
            "model": "anthropic/claude-sonnet-4",
            "parameters": {"temperature": 0.3, "top_k": 30, "max_tokens": 3000, "stop": ["##"]},
            "reasoning": {"max_tokens": 4000, "exclude": False},
            "provider": {"order": ["anthropic"], "allow_fallbacks": False, "zdr": True},
            "planning_enabled": True,
            "model_filters": {"search": "sonnet", "tools_only": True},
        },
    )
    assert response.status_code == 200, response.content
    put(api, "/api/settings/system-prompt", {"system_prompt": "Answer in French."})


def current_state(api) -> dict:
    settings = api.get("/api/settings/model").json()
    settings.pop("updated_at")
    return {
        "settings": settings,
        "system_prompt": api.get("/api/settings/system-prompt").json(),
        "servers": get_server_state(),
    }


# Create, read, list -----------------------------------------------------------------------------


def test_create_captures_the_current_state(api, catalogue_models, servers, user):
    full_setup(api)
    response = post(api, "/api/presets/", {"name": "French Claude"})
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "French Claude"
    assert body["model"] == "anthropic/claude-sonnet-4"
    assert body["parameters"] == {
        "temperature": 0.3,
        "top_k": 30,
        "max_tokens": 3000,
        "stop": ["##"],
    }
    assert body["reasoning"] == {"max_tokens": 4000, "exclude": False}
    assert body["provider"] == {"order": ["anthropic"], "allow_fallbacks": False, "zdr": True}
    assert body["system_prompt"] == "Answer in French."
    assert body["planning_enabled"] is True
    assert body["model_filters"] == {"search": "sonnet", "tools_only": True}
    assert body["mcp_servers"] == {
        "files": {"enabled": True, "disabled_tools": []},
        "web": {"enabled": False, "disabled_tools": ["fetch"]},
    }
    assert body["is_default"] is False
    assert Preset.objects.get(name="French Claude").created_by == user
    assert api.get("/api/presets/French%20Claude").json() == body


def test_a_user_on_the_default_model_saves_that_model_by_name(api, fake_openrouter):
    body = post(api, "/api/presets/", {"name": "Plain"}).json()
    assert body["model"] == "fake/ok"
    assert body["system_prompt"] is None and body["parameters"] == {}


def test_list_presets(api, fake_openrouter):
    post(api, "/api/presets/", {"name": "b"})
    post(api, "/api/presets/", {"name": "a", "set_default": True})
    response = api.get("/api/presets/")
    assert response.status_code == 200
    presets = response.json()["presets"]
    assert [p["name"] for p in presets] == ["a", "b"]
    assert [p["is_default"] for p in presets] == [True, False]


def test_presets_are_shared_by_staff(api, fake_openrouter, other_user):
    post(api, "/api/presets/", {"name": "Team"})
    other = Client(headers={"Authorization": f"Bearer {create_api_token(other_user)}"})
    assert [p["name"] for p in other.get("/api/presets/").json()["presets"]] == ["Team"]


def test_presets_need_authentication(fake_openrouter):
    assert Client().get("/api/presets/").status_code == 401
    assert post(Client(), "/api/presets/", {"name": "x"}).status_code == 401
    assert post(Client(), "/api/presets/x/apply").status_code == 401


def test_duplicate_name_is_409(api, fake_openrouter):
    assert post(api, "/api/presets/", {"name": "Same"}).status_code == 201
    response = post(api, "/api/presets/", {"name": "Same"})
    assert response.status_code == 409
    assert response.json()["detail"] == "A preset named 'Same' already exists"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"name": ""}, 422),
        ({"name": "a/b"}, 422),
        ({"name": "x" * 101}, 422),
        ({"name": "ok", "colour": "red"}, 422),
        ({"name": "default"}, 400),
        ({"name": "   "}, 400),
    ],
)
def test_invalid_preset_names(api, fake_openrouter, body, status):
    response = post(api, "/api/presets/", body)
    assert response.status_code == status
    assert Preset.objects.count() == 0


def test_unknown_preset_is_404_on_every_route(api, fake_openrouter):
    assert api.get("/api/presets/nope").status_code == 404
    assert put(api, "/api/presets/nope", {}).status_code == 404
    assert api.delete("/api/presets/nope").status_code == 404
    assert post(api, "/api/presets/nope/set-default").status_code == 404
    response = post(api, "/api/presets/nope/apply")
    assert response.status_code == 404
    assert response.json()["detail"] == "Preset 'nope' not found"


# Default ----------------------------------------------------------------------------------------


def test_default_preset(api, fake_openrouter):
    response = api.get("/api/presets/default")
    assert response.status_code == 404
    assert response.json()["detail"] == "No default preset is set"
    post(api, "/api/presets/", {"name": "one"})
    post(api, "/api/presets/", {"name": "two"})
    response = post(api, "/api/presets/one/set-default")
    assert response.status_code == 200 and response.json()["is_default"] is True
    assert api.get("/api/presets/default").json()["name"] == "one"
    post(api, "/api/presets/two/set-default")
    assert api.get("/api/presets/default").json()["name"] == "two"
    assert list(Preset.objects.filter(is_default=True).values_list("name", flat=True)) == ["two"]


def test_creating_with_set_default_moves_the_default(api, fake_openrouter):
    post(api, "/api/presets/", {"name": "old", "set_default": True})
    post(api, "/api/presets/", {"name": "new", "set_default": True})
    assert api.get("/api/presets/default").json()["name"] == "new"
    assert api.get("/api/presets/old").json()["is_default"] is False


# Save, delete -----------------------------------------------------------------------------------


def test_put_saves_the_current_state_into_the_preset(api, catalogue_models):
    post(api, "/api/presets/", {"name": "Work"})
    put(api, "/api/settings/model", {"model": "openai/gpt-4o-mini"})
    put(api, "/api/settings/system-prompt", {"system_prompt": "Be formal."})
    response = put(api, "/api/presets/Work", {})
    assert response.status_code == 200
    body = api.get("/api/presets/Work").json()
    assert body["model"] == "openai/gpt-4o-mini"
    assert body["system_prompt"] == "Be formal."


def test_delete_preset(api, fake_openrouter):
    post(api, "/api/presets/", {"name": "Gone", "set_default": True})
    response = api.delete("/api/presets/Gone")
    assert response.status_code == 204
    assert api.get("/api/presets/Gone").status_code == 404
    assert api.get("/api/presets/default").status_code == 404
    assert api.delete("/api/presets/Gone").status_code == 404


# Apply ------------------------------------------------------------------------------------------


def test_round_trip_save_change_everything_apply_is_identical(api, catalogue_models, servers):
    full_setup(api)
    saved = current_state(api)
    assert post(api, "/api/presets/", {"name": "Snapshot"}).status_code == 201

    # Change every part of the state.
    response = put(
        api,
        "/api/settings/model",
        {
            "model": "openai/gpt-4o-mini",
            "parameters": {"temperature": 1.5, "top_k": None, "max_tokens": 100, "seed": 1},
            "reasoning": {"max_tokens": None, "exclude": None},
            "provider": {"order": None, "allow_fallbacks": True, "zdr": None, "sort": "price"},
            "planning_enabled": False,
            "model_filters": {"search": "gpt"},
        },
    )
    assert response.status_code == 200, response.content
    put(api, "/api/settings/system-prompt", {"system_prompt": None})
    McpServer.objects.filter(server_id="files").update(enabled=False, disabled_tools=["rm"])
    McpServer.objects.filter(server_id="web").update(enabled=True, disabled_tools=[])
    changed = current_state(api)
    for part in ("settings", "system_prompt", "servers"):
        assert changed[part] != saved[part]

    response = post(api, "/api/presets/Snapshot/apply")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["applied"] == "Snapshot"
    assert body["mcp_servers"] == saved["servers"]
    assert current_state(api) == saved


def test_applying_a_preset_with_a_missing_model_changes_nothing(api, catalogue_models, servers):
    Preset.objects.create(
        name="Old",
        model="retired/model-1",
        parameters={"temperature": 0.1},
        mcp_servers={"files": {"enabled": False, "disabled_tools": []}},
    )
    before = current_state(api)
    response = post(api, "/api/presets/Old/apply")
    assert response.status_code == 409
    assert "'retired/model-1'" in response.json()["detail"]
    assert current_state(api) == before


def test_applying_a_preset_with_a_missing_mcp_server_changes_nothing(
    api, catalogue_models, servers
):
    Preset.objects.create(
        name="Tools",
        model="openai/gpt-4o-mini",
        system_prompt="changed",
        mcp_servers={
            "files": {"enabled": False, "disabled_tools": []},
            "calendar": {"enabled": True, "disabled_tools": []},
        },
    )
    before = current_state(api)
    response = post(api, "/api/presets/Tools/apply")
    assert response.status_code == 409
    assert "calendar" in response.json()["detail"]
    assert "files" not in response.json()["detail"]
    assert current_state(api) == before


def test_applying_a_preset_whose_values_no_longer_fit_its_model_changes_nothing(
    api, catalogue_models
):
    Preset.objects.create(name="Bad", model="openai/gpt-4o-mini", parameters={"top_k": 5})
    before = current_state(api)
    response = post(api, "/api/presets/Bad/apply")
    assert response.status_code == 409
    assert "parameters.top_k" in response.json()["detail"]
    assert current_state(api) == before


def test_applying_changes_only_the_callers_settings(api, catalogue_models, other_user):
    Preset.objects.create(name="Mine", model="openai/gpt-4o-mini")
    post(api, "/api/presets/Mine/apply")
    assert services.get_user_settings(other_user).model == ""
    assert api.get("/api/settings/model").json()["model"] == "openai/gpt-4o-mini"


def test_new_conversation_starts_from_the_default_preset(user, catalogue_models, servers):
    Preset.objects.create(
        name="House",
        model="fake/reasoning",
        parameters={"temperature": 0.7},
        mcp_servers={"files": {"enabled": False, "disabled_tools": []}},
        is_default=True,
    )
    services.update_model_settings(user, {"model": "openai/gpt-4o-mini"})
    applied = services.apply_default_preset(user)
    assert applied is not None and applied.name == "House"
    loaded = services.get_user_settings(user)
    assert loaded.model == "fake/reasoning" and loaded.parameters == {"temperature": 0.7}
    # The MCP servers are shared: a new conversation does not switch them for everyone.
    assert get_server_state()["files"]["enabled"] is True


def test_no_default_preset_leaves_settings_alone(user, catalogue_models):
    services.update_model_settings(user, {"model": "openai/gpt-4o-mini"})
    assert services.apply_default_preset(user) is None
    assert services.get_user_settings(user).model == "openai/gpt-4o-mini"
