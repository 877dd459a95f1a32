import re

import pytest
from django.template.loader import render_to_string
from django.test import Client

from integrations.models import McpServer
from presets import pages, services
from presets.models import Preset, Suggestion

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true", "HX-Target": "picker-results"}


@pytest.fixture
def browser(user):
    client = Client()
    client.force_login(user)
    return client


def names_in(html: str) -> list[str]:
    return re.findall(r'data-model-id="([^"]+)"', html)


def no_inline_code(html: str) -> None:
    assert "<script" not in html and "<style" not in html and "style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"


def test_panels_need_a_logged_in_staff_user(fake_openrouter, make_user):
    assert Client().get("/models/picker/").status_code == 302
    client = Client()
    client.force_login(make_user("visitor", staff=False))
    assert client.get("/models/settings/").status_code == 302


def test_picker_searches_filters_and_sorts(browser, catalogue_models):
    response = browser.get("/models/picker/?q=claude+sonnet", headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="picker-results"' in html and "picker-filters" not in html, "results only"
    assert "anthropic/claude-sonnet-4" in names_in(html)
    assert all("claude" in n or "sonnet" in n or "anthropic" in n for n in names_in(html))
    no_inline_code(html)

    html = browser.get(
        "/models/picker/?image=1&tools=1&min_context=150000&max_price=5&sort=price",
        headers=HTMX,
    ).content.decode()
    found = names_in(html)
    expected = {
        m["id"]
        for m in catalogue_models
        if "image" in (m.get("architecture") or {}).get("input_modalities", [])
        and "tools" in m.get("supported_parameters", [])
        and m.get("context_length", 0) >= 150000
        and 0 <= float(m.get("pricing", {}).get("prompt", "-1")) * 1e6 <= 5
    }
    assert set(found) == expected and found
    assert f"{len(expected)} model" in html


def test_picker_remembers_its_filters(browser, catalogue_models, user):
    browser.get("/models/picker/?q=grok&provider=x-ai&sort=newest", headers=HTMX)
    state = services.get_user_settings(user).model_filters
    assert state["q"] == "grok" and state["provider"] == "x-ai" and state["sort"] == "newest"
    html = browser.get("/models/picker/").content.decode()
    assert 'value="grok"' in html
    assert '<option value="x-ai" selected>' in html
    assert all(n.startswith("x-ai/") for n in names_in(html))


def test_choosing_a_model_applies_to_the_next_message(browser, catalogue_models, user):
    response = browser.post("/models/picker/choose", {"model": "openai/gpt-4o-mini"})
    assert response.status_code == 200
    assert "openai/gpt-4o-mini" in response.content.decode()
    assert response["HX-Trigger"] == "model-changed"
    assert pages.next_model_for(user) == "openai/gpt-4o-mini"
    bad = browser.post("/models/picker/choose", {"model": "nobody/nothing"})
    assert bad.status_code == 400 and "unknown model" in bad.content.decode()
    assert pages.next_model_for(user) == "openai/gpt-4o-mini"


def test_favourites_from_the_picker(browser, catalogue_models, user):
    response = browser.post("/models/picker/favourite", {"model": "openai/gpt-4o-mini"})
    assert response.status_code == 200 and 'aria-pressed="true"' in response.content.decode()
    html = browser.get("/models/picker/?favourites=1", headers=HTMX).content.decode()
    assert names_in(html) == ["openai/gpt-4o-mini"]
    browser.post("/models/picker/favourite", {"model": "openai/gpt-4o-mini"})
    assert services.get_user_settings(user).favourites == []


def test_picker_shows_an_upstream_failure(browser, fake_openrouter, settings):
    settings.OPENROUTER_BASE_URL = "http://127.0.0.1:9/api/v1"
    html = browser.get("/models/picker/?q=x", headers=HTMX).content.decode()
    assert "Could not reach the model API" in html


def test_settings_panel_saves_everything(browser, catalogue_models, user):
    services.set_model(user, "anthropic/claude-sonnet-4")
    html = browser.get("/models/settings/").content.decode()
    assert 'name="temperature"' in html
    no_inline_code(html)
    response = browser.post(
        "/models/settings/",
        {
            "temperature": "0.5",
            "top_k": "40",
            "max_tokens": "2000",
            "stop": "END\n###",
            "reasoning_max_tokens": "1024",
            "reasoning_hidden": "1",
            "provider_order": "anthropic, google",
            "allow_fallbacks": "no",
            "deny_data_collection": "1",
            "provider_sort": "latency",
            "planning_enabled": "1",
            "system_prompt": "Be kind.",
        },
    )
    assert response.status_code == 200 and "Saved." in response.content.decode()
    saved = services.get_user_settings(user)
    assert saved.parameters == {
        "temperature": 0.5,
        "top_k": 40,
        "max_tokens": 2000,
        "stop": ["END", "###"],
    }
    assert saved.reasoning == {"max_tokens": 1024, "exclude": True}
    assert saved.provider == {
        "order": ["anthropic", "google"],
        "allow_fallbacks": False,
        "data_collection": "deny",
        "sort": "latency",
    }
    assert saved.planning_enabled is True and saved.system_prompt == "Be kind."
    # Blank fields remove settings.
    browser.post("/models/settings/", {"temperature": "0.7"})
    saved = services.get_user_settings(user)
    assert saved.parameters == {"temperature": 0.7} and saved.reasoning == {}
    assert saved.provider == {} and saved.system_prompt == ""


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"temperature": "hot"}, "parameters.temperature"),
        ({"temperature": "7"}, "parameters.temperature"),
        ({"seed": "1.5"}, "parameters.seed"),
        ({"top_k": "5"}, "parameters.top_k"),  # gpt-4o-mini has no top_k
        ({"reasoning_effort": "low", "reasoning_max_tokens": "5"}, "reasoning"),
    ],
)
def test_settings_panel_names_the_bad_field(browser, catalogue_models, user, data, named):
    services.set_model(user, "openai/gpt-4o-mini")
    response = browser.post("/models/settings/", data)
    assert response.status_code == 400
    assert named in response.content.decode()
    assert services.get_user_settings(user).parameters == {}


def test_presets_panel_save_apply_default_delete(browser, catalogue_models, user):
    services.set_model(user, "openai/gpt-4o-mini")
    response = browser.post("/models/presets/save", {"name": "Mini", "set_default": "1"})
    assert response.status_code == 200 and "Saved preset" in response.content.decode()
    assert Preset.objects.get(name="Mini").is_default
    services.set_model(user, "fake/ok")
    response = browser.post("/models/presets/Mini/apply")
    assert response.status_code == 200 and response["HX-Trigger"] == "settings-changed"
    assert pages.next_model_for(user) == "openai/gpt-4o-mini"
    browser.post("/models/presets/save", {"name": "Other"})
    browser.post("/models/presets/Other/set-default")
    assert Preset.objects.get(is_default=True).name == "Other"
    html = browser.get("/models/presets/").content.decode()
    assert "Mini" in html and "Other" in html
    no_inline_code(html)
    browser.post("/models/presets/Mini/delete")
    assert not Preset.objects.filter(name="Mini").exists()


def test_presets_panel_reports_problems(browser, catalogue_models):
    McpServer.objects.create(server_id="files", url="http://127.0.0.1:9/mcp")
    Preset.objects.create(name="Broken", model="gone/model")
    response = browser.post("/models/presets/Broken/apply")
    assert response.status_code == 409 and "gone/model" in response.content.decode()
    assert browser.post("/models/presets/Nope/apply").status_code == 404
    assert browser.post("/models/presets/save", {"name": ""}).status_code == 400


def test_suggestion_chips(browser):
    assert browser.get("/models/suggestions/").content.decode().strip() == ""
    Suggestion.objects.create(label="Joke", text='Tell me a "joke"', position=0)
    html = browser.get("/models/suggestions/").content.decode()
    assert 'data-suggestion-text="Tell me a &quot;joke&quot;"' in html and ">Joke<" in html
    no_inline_code(html)


@pytest.mark.django_db(transaction=True)
async def test_generation_details_view(fake_openrouter, user, other_user):
    from asgiref.sync import sync_to_async

    from chat.models import Conversation, Message

    mine = await Conversation.objects.acreate(user=user)
    message = await Message.objects.acreate(
        conversation=mine, role="assistant", model="fake/ok", generation_id="gen-v"
    )
    fake_openrouter.generations["gen-v"] = {"id": "gen-v", "latency": 42}
    theirs = await Conversation.objects.acreate(user=other_user)
    other = await Message.objects.acreate(conversation=theirs, role="assistant")
    from django.test import AsyncClient

    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    response = await client.get(f"/models/messages/{message.pk}/details")
    assert response.status_code == 200
    assert "42 ms" in response.content.decode() and "gen-v" in response.content.decode()
    assert (await client.get(f"/models/messages/{other.pk}/details")).status_code == 404


def test_partials_can_be_included_by_the_chat_page(user, catalogue_models):
    html = render_to_string(
        "presets/panels.html#picker", pages.picker_context(user, {"q": "gpt-4o-mini"})
    )
    assert 'id="model-picker"' in html and "openai/gpt-4o-mini" in names_in(html)
    no_inline_code(html)


def test_models_page_has_every_panel(browser, catalogue_models):
    response = browser.get("/models/")
    assert response.status_code == 200
    html = response.content.decode()
    for region in ('id="model-picker"', 'id="presets-panel"', 'id="settings-panel"'):
        assert region in html
    assert len(names_in(html)) == pages.PICKER_LIMIT
    no_inline_code(html.split("</head>", 1)[1])


def test_suggestion_chips_that_send_over_the_websocket():
    Suggestion.objects.create(label="Plan", text="Plan my <day>", position=0)
    html = render_to_string("presets/panels.html#suggestion-forms", pages.suggestions_context())
    assert "ws-send" in html and 'name="action" value="send"' in html
    assert 'name="message" value="Plan my &lt;day&gt;"' in html
    no_inline_code(html)
