import asyncio
import time
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from attachments.models import Attachment
from chat.models import Message
from chat.rendering import render_markdown
from tests.conftest import bearer_client
from tests.integrations.conftest import chat, set_calls, tool_events
from tests.integrations.mcp_testserver import INJECTION
from tests.sse import content_of

pytestmark = pytest.mark.django_db(transaction=True)


class Tags(HTMLParser):
    """The elements and attributes a browser would build from some HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.names.append(tag)
        self.attrs.extend(attrs)


def slow_result_store(
    monkeypatch,
    seconds: float,
    before: Callable[[Any], object] | None = None,
    after: Callable[[Any], object] | None = None,
) -> None:
    """Storing a tool result takes `seconds` more; `before` and `after` run in the storing
    thread around that wait (with the pending round), to act or look while it is under way."""
    from integrations import toolloop

    store = toolloop._store_result

    def slow_store(pending, *args, **kwargs):
        if before is not None:
            before(pending)
        time.sleep(seconds)
        if after is not None:
            after(pending)
        return store(pending, *args, **kwargs)

    monkeypatch.setattr(toolloop, "_store_result", slow_store)


def stop_while_storing(monkeypatch) -> None:
    """Stop the turn from inside the store of its last tool result, so it lands in that window
    every time."""
    from chat import turns

    loop = asyncio.get_running_loop()
    slow_result_store(
        monkeypatch,
        0.3,
        before=lambda pending: loop.call_soon_threadsafe(
            turns.cancel_turn, pending.message.conversation_id
        ),
    )


# The question, the round that asked for the tool, its result, and the next round stopped.
STOPPED_WHILE_STORING = [
    ("user", "complete"),
    ("assistant", "complete"),
    ("tool", "complete"),
    ("assistant", "cancelled"),
]


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
    assert sent[-2]["role"] == "assistant"
    assert sent[-2]["tool_calls"][0]["id"] == tools[0]["call_id"]
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
    assert asker.tool_calls is not None and asker.tool_calls[0]["function"]["name"] == "add"
    assert result.parent_id == asker.pk and result.tool_call_id == tools[0]["call_id"]
    assert result.tool_name == "add" and tools[1]["message_id"] == result.pk
    assert answer.parent_id == result.pk


async def test_independent_calls_of_one_round_run_concurrently(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    # Two 0.4 s calls: run one after the other they could not both have started before either
    # finished.
    set_calls(fake_openrouter, ("slow", {"seconds": 0.4}), ("slow", {"seconds": 0.4}))

    events = await chat(aapi)

    statuses = [(t["status"], t["call_id"]) for t in tool_events(events)]
    assert [s for s, _ in statuses[:2]] == ["started", "started"]
    assert sorted(s for s, _ in statuses[2:]) == ["finished", "finished"]
    sent = fake_openrouter.requests[1]["body"]["messages"]
    assert [m["role"] for m in sent[-3:]] == ["assistant", "tool", "tool"]


async def test_slow_tool_hits_its_timeout_and_the_model_reads_the_error(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url, call_timeout=0.3)
    set_calls(fake_openrouter, ("slow", {"seconds": 5}))

    events = await chat(aapi)

    done = tool_events(events)[-1]
    assert done["status"] == "error" and "timed out after 0.3 s" in done["result"]
    sent = fake_openrouter.requests[1]["body"]["messages"][-1]
    assert sent["role"] == "tool" and "timed out" in sent["content"]
    assert content_of(events).startswith("Echo:")


async def test_tool_errors_become_results_the_model_can_read(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("fail", {}))

    events = await chat(aapi)

    done = tool_events(events)[-1]
    assert done["status"] == "error" and "boom" in done["result"]
    assert "boom" in fake_openrouter.requests[1]["body"]["messages"][-1]["content"]
    stored = await Message.objects.aget(pk=done["message_id"])
    assert stored.status == "error" and stored.role == "tool"


async def test_huge_result_is_capped_before_reaching_the_model(
    aapi, fake_openrouter, mcp_server, add_server, settings
):
    settings.MCP_RESULT_MAX_CHARS = 1000
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("huge", {"size": 200_000}))

    events = await chat(aapi)

    sent = fake_openrouter.requests[1]["body"]["messages"][-1]["content"]
    assert sent.startswith("x" * 1000) and "x" * 1001 not in sent
    assert "Result truncated: 200000 characters" in sent
    assert tool_events(events)[-1]["result"] == sent


async def test_image_in_a_result_is_stored_for_the_chat(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("picture", {}))

    events = await chat(aapi)

    done = tool_events(events)[-1]
    assert done["status"] == "finished" and done["images"] == 1
    stored = await Message.objects.aget(pk=done["message_id"])
    (part,) = stored.content_parts or []
    assert part["type"] == "attachment"
    image = await Attachment.objects.aget(public_id=part["attachment_id"])
    assert image.mime_type == "image/png" and image.message_id == stored.pk
    assert "here is a pixel" in stored.content
    # The model gets text only: the image is for the person.
    sent = fake_openrouter.requests[1]["body"]["messages"][-1]
    assert isinstance(sent["content"], str) and "image/png" in sent["content"]


async def test_prompt_injection_in_a_result_is_rendered_inert(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("inject", {}))

    events = await chat(aapi)

    stored = await Message.objects.aget(pk=tool_events(events)[-1]["message_id"])
    assert stored.content == INJECTION
    for html in (stored.html, render_markdown(tool_events(events)[-1]["result"])):
        tags = Tags()
        tags.feed(html)
        assert "script" not in tags.names and "img" not in tags.names
        assert not [a for a in tags.attrs if a[0].startswith("on")]
        assert not [a for a in tags.attrs if "javascript:" in (a[1] or "")]
        assert "IGNORE ALL PREVIOUS INSTRUCTIONS" in html  # shown as text, not obeyed


async def test_hop_limit_pauses_the_turn_with_a_stored_message(
    aapi, fake_openrouter, mcp_server, add_server, settings
):
    settings.MCP_MAX_ROUNDS = 3
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("echo", {"text": "again"}))

    events = await chat(aapi, model="fake/tools-always")

    assert len(fake_openrouter.requests) == 3
    limit = tool_events(events)[-1]
    assert limit["status"] == "hop_limit" and "3 model rounds" in limit["message"]
    pause = await Message.objects.aget(pk=limit["message_id"])
    assert pause.role == "assistant" and pause.content == limit["message"]
    assert events[-2].name == "metadata" and events[-2].json["message_id"] == pause.pk
    assert events[-1].data == "[DONE]"
    # Every stored tool call has its result.
    calls = [
        m async for m in Message.objects.filter(role="assistant").filter(tool_calls__isnull=False)
    ]
    results = {m.tool_call_id async for m in Message.objects.filter(role="tool")}
    assert len(calls) == 3 and all((c.tool_calls or [{}])[0]["id"] in results for c in calls)


async def test_two_failed_calls_in_a_row_pause_the_turn(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("fail", {}))

    events = await chat(aapi, model="fake/tools-always")

    assert len(fake_openrouter.requests) == 2
    limit = tool_events(events)[-1]
    assert (
        limit["status"] == "tool_error_limit" and "2 tool calls in a row failed" in limit["message"]
    )
    assert (await Message.objects.aget(pk=limit["message_id"])).content == limit["message"]


async def test_a_model_that_rejects_tools_is_retried_once_without_them(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)

    events = await chat(aapi, model="fake/reject-tools", text="hello")

    assert [bool(r["body"].get("tools")) for r in fake_openrouter.requests] == [True, False]
    notice = next(e.json for e in events if e.name == "notice")
    assert notice["type"] == "tools_disabled" and "does not accept tools" in notice["message"]
    assert content_of(events) == "Echo: hello done."
    assert [m.status async for m in Message.objects.filter(role="assistant")] == ["complete"]


async def test_history_sent_back_pairs_every_tool_call_with_its_result(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("add", {"a": 1, "b": 1}))
    events = await chat(aapi)
    session_id = events[0].json["session_id"]

    await chat(aapi, model="fake/ok", text="thanks", session_id=session_id)

    sent = fake_openrouter.requests[-1]["body"]["messages"]
    roles = [m["role"] for m in sent]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[2]["tool_calls"][0]["id"] == sent[3]["tool_call_id"]


async def test_disabled_tools_and_servers_are_never_offered_or_run(
    aapi, fake_openrouter, mcp_server, add_server
):
    alpha, beta = mcp_server("alpha"), mcp_server("beta")
    add_server("alpha", alpha.url, disabled_tools=["write_note", "echo"])
    add_server("beta", beta.url, enabled=False)
    set_calls(fake_openrouter, ("echo", {"text": "sneaky"}))

    events = await chat(aapi)

    offered = [t["function"]["name"] for t in fake_openrouter.requests[0]["body"]["tools"]]
    assert "echo" not in offered and "write_note" not in offered and "add" in offered
    assert not any(name.startswith("beta") for name in offered)
    assert beta.sessions == 0
    done = tool_events(events)[-1]
    assert done["status"] == "error" and "Unknown or disabled tool: echo" in done["result"]


async def test_session_is_reused_across_turns(aapi, fake_openrouter, mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("add", {"a": 1, "b": 2}))

    for _ in range(3):
        events = await chat(aapi)
        assert tool_events(events)[-1]["result"] == "3"

    assert alpha.sessions == 1


async def test_two_users_call_the_same_server_at_once(
    fake_openrouter, mcp_server, add_server, user, other_user
):
    from chat.services import create_api_token

    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("slow", {"seconds": 0.3}))
    clients = [bearer_client(await sync_to_async(create_api_token)(u)) for u in (user, other_user)]

    both = await asyncio.gather(*(chat(c) for c in clients))

    for events in both:
        assert tool_events(events)[-1]["result"] == "slept"
    assert alpha.sessions == 1
    owners = {
        m.conversation.user_id
        async for m in Message.objects.filter(role="tool").select_related("conversation")
    }
    assert owners == {user.pk, other_user.pk}


async def test_next_round_prompt_matches_what_the_history_reads_back(
    aapi, fake_openrouter, mcp_server, add_server
):
    from chat.models import Conversation
    from chat.services import build_prompt

    add_server("alpha", mcp_server("alpha").url)
    set_calls(fake_openrouter, ("add", {"a": 1, "b": 2}), ("echo", {"text": "hi"}))
    events = await chat(aapi)

    conversation = await Conversation.objects.aget(session_id=events[0].json["session_id"])
    final = await conversation.messages.filter(role="assistant").alast()
    assert final is not None
    expected = await sync_to_async(build_prompt)(conversation, final)
    sent = fake_openrouter.requests[1]["body"]["messages"]
    # The same messages (tool results may be stored in finishing order: compare as sets).
    assert sent[0]["role"] == expected[0]["role"] == "system"
    assert sent[1:3] == expected[1:3]
    assert sorted(map(str, sent[3:])) == sorted(map(str, expected[3:]))


async def test_the_next_request_goes_out_while_the_last_result_is_stored(
    aapi, fake_openrouter, mcp_server, add_server, monkeypatch
):
    # The model's next request need not wait for the database: with a slow store, the fake
    # receives it before the store ends, and the result still reaches the model, the stored
    # history and the events, in order.
    add_server("alpha", mcp_server("alpha").url)
    set_calls(fake_openrouter, ("add", {"a": 2, "b": 3}))
    requests_when_stored: list[int] = []
    slow_result_store(
        monkeypatch,
        0.5,
        after=lambda pending: requests_when_stored.append(len(fake_openrouter.requests)),
    )

    events = await chat(aapi)

    assert requests_when_stored == [2], "the next request arrived while the result was stored"
    assert len(fake_openrouter.requests) == 2
    sent = fake_openrouter.requests[1]["body"]["messages"]
    assert sent[-1]["role"] == "tool" and sent[-1]["content"] == "5"
    names = [e.name for e in events]
    finished = next(
        i for i, e in enumerate(events) if e.name == "tool" and e.json["status"] == "finished"
    )
    first_chunk_after = next(i for i in range(finished, len(events)) if events[i].name == "message")
    assert names.index("tool") < finished < first_chunk_after, "finished before the answer"
    tool = await Message.objects.aget(role="tool")
    assert events[finished].json["message_id"] == tool.pk
    messages = [m async for m in Message.objects.order_by("id")]
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("tool", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[3].parent_id == tool.pk and messages[3].content.startswith("Echo:")


async def test_stop_while_the_last_result_is_stored_keeps_it_and_cancels_the_next_round(
    aapi, fake_openrouter, mcp_server, add_server, monkeypatch
):
    add_server("alpha", mcp_server("alpha").url)
    set_calls(fake_openrouter, ("add", {"a": 2, "b": 3}))
    stop_while_storing(monkeypatch)
    await asyncio.wait_for(chat(aapi), 10)

    messages = [m async for m in Message.objects.order_by("id")]
    assert [(m.role, m.status) for m in messages] == STOPPED_WHILE_STORING
    assert messages[2].content == "5"
    assert not await Message.objects.filter(status="streaming").aexists()


async def test_stop_while_the_last_result_is_stored_before_a_pause_cancels_the_next_round(
    aapi, fake_openrouter, mcp_server, add_server, monkeypatch, settings
):
    # With the round limit reached, the turn waits for the store (to pause, not to ask the
    # model again); a Stop then must still leave no round `streaming`.
    settings.MCP_MAX_ROUNDS = 1
    add_server("alpha", mcp_server("alpha").url)
    set_calls(fake_openrouter, ("add", {"a": 2, "b": 3}))
    stop_while_storing(monkeypatch)
    await asyncio.wait_for(chat(aapi), 10)

    messages = [m async for m in Message.objects.order_by("id")]
    assert [(m.role, m.status) for m in messages] == STOPPED_WHILE_STORING
    assert len(fake_openrouter.requests) == 1
