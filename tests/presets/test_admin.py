import pytest
from django.test import Client

from presets.models import Preset, Suggestion

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="pw-Secret-123")
    client = Client()
    client.force_login(admin)
    return client


def preset_form(**overrides):
    data = {
        "name": "Admin preset",
        "model": "fake/ok",
        "parameters": "{}",
        "reasoning": "{}",
        "provider": "{}",
        "system_prompt": "",
        "mcp_servers": "{}",
        "model_filters": "{}",
    }
    data.update(overrides)
    return data


def test_admin_lists_presets_suggestions_and_settings(admin_client):
    Preset.objects.create(name="Listed")
    Suggestion.objects.create(label="Chip", text="Say hi")
    assert b"Listed" in admin_client.get("/admin/presets/preset/").content
    assert b"Chip" in admin_client.get("/admin/presets/suggestion/").content
    assert admin_client.get("/admin/presets/usermodelsettings/").status_code == 200


def test_admin_rejects_out_of_range_parameters_naming_them(admin_client):
    response = admin_client.post(
        "/admin/presets/preset/add/", preset_form(parameters='{"temperature": 5}')
    )
    assert response.status_code == 200
    assert b"temperature" in response.content
    assert not Preset.objects.exists()


def test_admin_default_checkbox_moves_the_default(admin_client):
    Preset.objects.create(name="Old default", is_default=True)
    response = admin_client.post(
        "/admin/presets/preset/add/",
        preset_form(parameters='{"temperature": 0.5}', is_default="on"),
    )
    assert response.status_code == 302
    assert list(Preset.objects.filter(is_default=True).values_list("name", flat=True)) == [
        "Admin preset"
    ]
    created = Preset.objects.get(name="Admin preset")
    assert created.parameters == {"temperature": 0.5}
    assert created.created_by is not None and created.created_by.username == "root"


def test_openapi_documents_every_route(api):
    paths = api.get("/api/openapi.json").json()["paths"]
    for path in [
        "/api/models",
        "/api/models/metadata",
        "/api/settings/model",
        "/api/settings/model/active-provider",
        "/api/settings/system-prompt",
        "/api/presets/",
        "/api/presets/default",
        "/api/presets/{name}",
        "/api/presets/{name}/set-default",
        "/api/presets/{name}/apply",
        "/api/suggestions",
        "/api/suggestions/{index}",
    ]:
        assert path in paths, path
