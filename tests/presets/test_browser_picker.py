"""Browser test of the model picker (Playwright + Chromium), run on its own:
`uv run pytest -m browser tests/presets/test_browser_picker.py`."""

import pytest
from playwright.sync_api import Page, expect

from chat.models import Message
from tests.browser.conftest import (  # noqa: F401  (fixtures shared with the chat page tests)
    app_server,
    browser_type_launch_args,
    logged_in,
)

pytestmark = pytest.mark.browser


def test_filter_the_picker_pick_a_model_and_the_next_answer_comes_from_it(
    page: Page,
    logged_in,  # noqa: F811
    catalogue_models,
    fake_openrouter,
):
    page.goto(f"{logged_in.url}/models/")
    results = page.locator("#picker-results .picker-item")
    expect(results).to_have_count(100)  # the first page of the realistic catalogue

    page.locator("input[name=q]").fill("fake reasoning")
    expect(results).to_have_count(1)
    expect(results.first).to_have_attribute("data-model-id", "fake/reasoning")

    page.locator("input[name=tools]").check()  # fake/reasoning takes no tools
    expect(page.locator("#picker-results .picker-empty")).to_be_visible()
    page.locator("input[name=tools]").uncheck()
    expect(results).to_have_count(1)

    results.first.locator(".picker-choose-button").click()
    expect(page.locator("#picker-current")).to_contain_text("fake/reasoning")

    page.goto(f"{logged_in.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    page.locator("#prompt").fill("which model are you")
    page.locator("#prompt").press("Enter")
    answer = page.locator(".msg-assistant.status-complete")
    expect(answer.locator(".msg-body")).to_contain_text("which model are you")
    expect(answer.locator(".msg-meta")).to_contain_text("fake/reasoning")
    assert fake_openrouter.requests[-1]["body"]["model"] == "fake/reasoning"
    assert Message.objects.filter(role="assistant").get().model == "fake/reasoning"
