import pytest

from chat.models import Message
from tests.integrations.conftest import chat, set_calls, tool_events
from tests.sse import content_of

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_tool_call_runs_and_its_result_goes_back_to_the_model(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("add", {"a": 2, "b": 3}))

    events = await chat(aapi)

    tools = tool_events(events)
    assert [t["status"] for t in tools] == ["started", "finished"]
    assert tools[1]["name"] == "add" and tools[1]["result"] == "5"
    assert tools[1]["server"] == "alpha"
    first, second = fake_openrouter.requests
    assert "add" in [t["function"]["name"] for t in first["body"]["tools"]]
    sent = second["body"]["messages"]
    assert sent[-2]["role"] == "assistant" and sent[-2]["tool_calls"][0]["id"] == tools[0]["call_id"]
    assert sent[-1] == {"role": "tool", "tool_call_id": tools[0]["call_id"], "content": "5"}
    assert content_of(events).startswith("Echo:")
    names = [e.name for e in events]
    assert names.count("metadata") == 2 and events[-1].data == "[DONE]"

    messages = [m async for m in Message.objects.order_by("id")]
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("tool", "complete"),
        ("assistant", "complete"),
    ]
    asker, result, answer = messages[1:]
    assert asker.tool_calls[0]["function"]["name"] == "add"
    assert result.parent_id == asker.pk and result.tool_call_id == tools[0]["call_id"]
    assert result.tool_name == "add" and tools[1]["message_id"] == result.pk
    assert answer.parent_id == result.pk
