from playwright.sync_api import Page, expect

from integrations.models import McpServer
from tests.browser.conftest import SCREENSHOTS
from tests.browser.test_chat_page import send
from tests.integrations.conftest import McpHttpServer, set_calls


def test_tool_cards_and_approval_in_the_page(page: Page, logged_in, fake_openrouter, settings):
    server = McpHttpServer("alpha").start()
    try:
        McpServer.objects.create(server_id="alpha", url=server.url)
        settings.OPENROUTER_DEFAULT_MODEL = "fake/tool-turn"
        set_calls(fake_openrouter, ("add", {"a": 2, "b": 3}), ("write_note", {"text": "milk"}))
        page.goto(f"{logged_in.url}/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "open")
        send(page, "Add 2 and 3, then note milk")

        card = page.locator(".tool-approval")
        expect(card).to_contain_text("write_note")
        expect(card).to_contain_text("waiting for your approval")
        expect(card.locator(".tool-args")).to_contain_text('"text": "milk"')
        page.screenshot(path=SCREENSHOTS / "tool-approval.png")
        card.get_by_role("button", name="Approve").click()

        # The final answer (the round that asked for the tools is complete too, and may
        # already be drawn as such: match the answer by its text).
        done = page.locator(".msg-assistant.status-complete").filter(has_text="Echo:")
        expect(done).to_be_visible()
        cards = page.locator(".msg-tool .tool-card")
        expect(cards).to_have_count(2)
        expect(cards.nth(0)).to_contain_text("add")
        expect(cards.nth(0)).to_contain_text("alpha")
        cards.nth(1).locator("summary").click()
        expect(cards.nth(1).locator(".tool-result")).to_contain_text("saved: milk")
        page.screenshot(path=SCREENSHOTS / "tools.png")
    finally:
        server.stop()


def test_an_image_a_tool_returns_loads_on_its_card_live_and_after_reload(
    page: Page, logged_in, fake_openrouter, settings, tmp_path
):
    from tests.browser.test_attachments_page import wait_image_loaded

    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "attachments")},
        },
    }
    server = McpHttpServer("alpha").start()
    try:
        McpServer.objects.create(server_id="alpha", url=server.url)
        settings.OPENROUTER_DEFAULT_MODEL = "fake/tool-turn"
        set_calls(fake_openrouter, ("picture", {}))
        page.goto(f"{logged_in.url}/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "open")
        send(page, "Draw a pixel")

        expect(page.locator(".msg-assistant.status-complete").last).to_contain_text("Draw")
        thumb = ".msg-tool img.attachment-thumb"
        # The 1x1 PNG from the tool, served through the signed, owner-checked download URL
        # (a strict CSP blocks nothing: same origin, no data: URL).
        wait_image_loaded(page, thumb, 1)
        assert (page.locator(thumb).get_attribute("src") or "").startswith("/attachments/att_")
        page.reload()
        wait_image_loaded(page, thumb, 1)
    finally:
        server.stop()
