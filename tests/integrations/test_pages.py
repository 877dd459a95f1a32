"""Tool calls in the chat page: live cards, approval from the page, inert tool output."""

import asyncio
import json
import re

import pytest

from chat.models import Message
from tests.chat.test_rendering import elements
from tests.integrations.conftest import set_calls
from tests.pages import connect, frames_until
from tests.pages import turn_finished as finished

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tool_turn(mcp_server, add_server, fake_openrouter, settings):
    """Configure a real MCP server `alpha` and script the calls the fake model makes."""
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    settings.OPENROUTER_DEFAULT_MODEL = "fake/tool-turn"

    def script(*calls) -> None:
        set_calls(fake_openrouter, *calls)

    return script


async def start(ws, text: str) -> None:
    message = {"action": "send", "message": text, "client_id": text, "session_id": ""}
    await ws.send_to(text_data=json.dumps(message))


@pytest.mark.parametrize(("answer", "shown"), [("1", "saved: milk"), ("0", "denied")])
async def test_approval_card_in_the_page_runs_or_denies_the_call(user, tool_turn, answer, shown):
    tool_turn(("write_note", {"text": "milk"}))
    ws = await connect(user)
    await start(ws, "note milk")
    frames = await frames_until(ws, lambda f: "waiting for your approval" in f)
    card = frames[-1]
    assert "write_note" in card and "&quot;text&quot;: &quot;milk&quot;" in card
    match = re.search(r'id="call-([^"]+)"', card)
    assert match is not None
    call_id = match.group(1)
    assert 'name="action" value="approve"' in card

    approval = {"action": "approve", "call_id": call_id, "approve": answer}
    await ws.send_to(text_data=json.dumps(approval))
    final = (await frames_until(ws, finished))[-1]
    assert "tool-card" in final and "write_note" in final
    assert shown in final.lower()
    assert "waiting for your approval" not in final
    tool = await Message.objects.aget(role="tool")
    assert tool.tool_call_id == call_id
    await ws.disconnect()


async def test_another_users_answer_does_not_settle_the_card(user, make_user, tool_turn):
    from asgiref.sync import sync_to_async

    from integrations.services import pending_approvals_for

    tool_turn(("write_note", {"text": "milk"}))
    ws = await connect(user)
    await start(ws, "note milk")
    card = (await frames_until(ws, lambda f: "waiting for your approval" in f))[-1]
    match = re.search(r'id="call-([^"]+)"', card)
    assert match is not None
    call_id = match.group(1)

    from chat import live

    first = await Message.objects.afirst()
    assert first is not None
    conversation_id = first.conversation_id
    mallory = await sync_to_async(make_user)("mallory2")
    await live.answer_approval(conversation_id, mallory.pk, call_id, True)
    await asyncio.sleep(0.2)
    assert pending_approvals_for(user) == [call_id], "still waiting for its owner"
    await ws.send_to(text_data=json.dumps({"action": "stop"}))
    await frames_until(ws, finished)
    await ws.disconnect()


async def test_prompt_injection_in_a_tool_result_is_inert_in_the_page(user, tool_turn):
    tool_turn(("inject", {}))
    ws = await connect(user)
    await start(ws, "read the page")
    final = (await frames_until(ws, finished))[-1]
    result = final.split('class="tool-result markdown" hx-disable>')[1].split("</div>")[0]
    assert "IGNORE ALL PREVIOUS INSTRUCTIONS" in result, "shown as text"
    for tag, attrs in elements(result):
        assert tag not in {"script", "img", "iframe"}, result
        assert not any(name.startswith(("on", "hx-")) for name in attrs), result
        assert not (attrs.get("href") or "").startswith("javascript"), result
    await ws.disconnect()


async def test_an_image_a_tool_returns_is_shown_on_its_card(user, tool_turn):
    tool_turn(("picture", {}))
    ws = await connect(user)
    await start(ws, "draw")
    final = (await frames_until(ws, finished))[-1]
    images = re.findall(r'<img class="attachment-thumb" src="([^"]+)" alt="picture-1.png"', final)
    assert len(images) == 1 and images[0].startswith("/attachments/att_")
    assert "?token=" in images[0] and "data:" not in final
    await ws.disconnect()
