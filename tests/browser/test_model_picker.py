import pytest
from playwright.sync_api import Page, expect

from chat.models import Message
from tests.browser.conftest import SCREENSHOTS
from tests.presets.catalogue_data import build_catalogue
from tests.presets.conftest import FAKE_MODELS


@pytest.fixture
def catalogue(fake_openrouter):
    """The fake serves a realistic catalogue (hundreds of models) plus the fake/* ones."""
    saved = fake_openrouter.models
    fake_openrouter.models = [*FAKE_MODELS, *build_catalogue()]
    yield fake_openrouter.models
    fake_openrouter.models = saved


def test_filter_the_picker_in_the_chat_page_pick_a_model_and_the_answer_comes_from_it(
    page: Page, logged_in, catalogue, fake_openrouter
):
    page.goto(f"{logged_in.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    page.locator("#model-indicator").click()
    panel = page.locator("#model-panel")
    expect(panel).to_be_visible()
    results = panel.locator("#picker-results .picker-item")
    expect(results).to_have_count(100)  # the first page of the catalogue

    panel.locator("input[name=q]").fill("fake reasoning")
    expect(results).to_have_count(1)
    panel.locator("input[name=tools]").check()  # fake/reasoning takes no tools
    expect(panel.locator(".picker-empty")).to_be_visible()
    panel.locator("input[name=tools]").uncheck()
    expect(results).to_have_count(1)
    page.screenshot(path=SCREENSHOTS / "model-picker.png")
    results.first.locator(".picker-choose-button").click()
    expect(page.locator("#picker-current")).to_contain_text("fake/reasoning")
    expect(page.locator("#model-indicator")).to_have_text("fake/reasoning")

    page.keyboard.press("Escape")
    page.locator("#prompt").fill("which model are you")
    page.locator("#prompt").press("Enter")
    answer = page.locator(".msg-assistant.status-complete")
    expect(answer.locator(".msg-body")).to_contain_text("which model are you")
    expect(answer.locator(".msg-meta")).to_contain_text("fake/reasoning")
    streamed = [r for r in fake_openrouter.requests if r["body"].get("stream")]
    assert streamed[-1]["body"]["model"] == "fake/reasoning"
    assert Message.objects.get(role="assistant").model == "fake/reasoning"

    # The model is remembered for the next visit, and the answer's details open in place.
    page.goto(f"{logged_in.url}/")
    expect(page.locator("#model-indicator")).to_have_text("fake/reasoning")


def test_suggestion_chip_fills_the_prompt_and_details_show_the_generation(
    page: Page, logged_in, fake_openrouter
):
    from presets.models import Suggestion

    Suggestion.objects.create(label="Plan my day", text="Plan my day in three steps", position=0)
    page.goto(f"{logged_in.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    page.locator(".suggestion-chip", has_text="Plan my day").click()
    expect(page.locator("#prompt")).to_have_value("Plan my day in three steps")
    page.locator("#prompt").press("Enter")
    answer = page.locator(".msg-assistant.status-complete")
    expect(answer).to_be_visible()
    answer.locator(".details-toggle").click()
    details = answer.locator(".generation-details")
    expect(details).to_contain_text("FakeProvider")
    expect(details).to_contain_text("gen-")
    page.locator(".settings-toggle").click()
    expect(page.locator("#settings-pop .settings-panel")).to_be_visible()
    expect(page.locator("#settings-pop .presets-panel")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "settings.png")
