"""An API turn's first request goes out while its messages are stored (chat.api._start_turn)."""

import json
import socket
import threading
import time

import httpx
import pytest
from asgiref.sync import sync_to_async

from chat import services
from chat.models import Conversation, Message
from tests.sse import content_of, read_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def post_stream(client, **body):
    body.setdefault("messages", [{"role": "user", "content": "hello there"}])
    return await client.post("/api/chat/stream", body, content_type="application/json")


def slow_store(monkeypatch, seconds: float, before=None, after=None):
    """Make store_planned_turn take `seconds`, calling `before()` / `after()` around it."""
    store = services.store_planned_turn

    def slow(*args, **kwargs):
        if before is not None:
            before()
        time.sleep(seconds)
        try:
            return store(*args, **kwargs)
        finally:
            if after is not None:
                after()

    monkeypatch.setattr(services, "store_planned_turn", slow)


def wait_for_requests(fake, count: int) -> None:
    """In the store's thread: wait until the request sent ahead has reached the fake (the
    event loop sends it while the store runs; under load it may not have yet)."""
    deadline = time.monotonic() + 5
    while len(fake.requests) < count:
        assert time.monotonic() < deadline, "the request was not sent ahead"
        time.sleep(0.005)


async def test_the_first_request_goes_out_while_the_turn_is_stored(
    aapi, fake_openrouter, monkeypatch
):
    requests_when_stored: list[int] = []
    slow_store(
        monkeypatch, 0.5, after=lambda: requests_when_stored.append(len(fake_openrouter.requests))
    )

    events, _ = await read_stream(await post_stream(aapi))

    assert requests_when_stored == [1], "the model was asked before the turn was stored"
    assert events[0].name == "session"
    assert content_of(events) == "Echo: hello there done."
    conversation = await Conversation.objects.aget(session_id=events[0].json["session_id"])
    stored = [(m.role, m.status, m.content) async for m in conversation.messages.order_by("pk")]
    assert stored == [
        ("user", "complete", "hello there"),
        ("assistant", "complete", "Echo: hello there done."),
    ]


async def test_a_follow_up_turns_first_prompt_is_what_its_stored_history_gives(
    aapi, fake_openrouter
):
    from chat.services import build_prompt

    first, _ = await read_stream(await post_stream(aapi))
    session_id = first[0].json["session_id"]
    follow_up = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "and then?"}]},
    ]
    events, _ = await read_stream(
        await post_stream(aapi, session_id=session_id, messages=follow_up)
    )
    assert content_of(events).startswith("Echo:")

    sent = fake_openrouter.requests[-1]["body"]["messages"]
    conversation = await Conversation.objects.select_related("user").aget(session_id=session_id)
    answer = await conversation.messages.filter(role="assistant").alast()
    assert answer is not None
    stored = await sync_to_async(build_prompt)(conversation, answer)
    assert sent[1:] == stored[1:]
    assert [m["role"] for m in sent[1:]] == ["user", "assistant", "system", "user"]


async def test_a_resend_found_while_storing_closes_the_request_sent_ahead(
    aapi, fake_openrouter, monkeypatch
):
    # Between the checks (plan) and the write, another request stores the same message: the
    # write transaction checks again, the turn is refused, and its request to the model closed.
    first, _ = await read_stream(await post_stream(aapi))
    session_id = first[0].json["session_id"]
    conversation = await Conversation.objects.aget(session_id=session_id)
    fake_openrouter.slow_token_delay = 0.05

    def the_other_request_stores_it():
        wait_for_requests(fake_openrouter, 2)
        Message.objects.create(
            conversation=conversation, role="user", content="again", client_message_id="m-7"
        )

    slow_store(monkeypatch, 0.2, before=the_other_request_stores_it)
    response = await post_stream(
        aapi,
        model="fake/slow",
        session_id=session_id,
        messages=[{"role": "user", "content": "again"}],
        metadata={"client_parent_message_id": "m-7"},
    )

    assert response.status_code == 409
    assert "already received" in response.json()["detail"]
    assert len(fake_openrouter.requests) == 2, "the second request was sent ahead"
    assert fake_openrouter.wait_closed_streams(1, timeout=5), "the request sent ahead is open"
    assert await conversation.messages.filter(content="again").acount() == 1
    assert not await Message.objects.filter(status="streaming").aexists()


def test_a_client_gone_while_its_turn_is_stored_leaves_no_answer_streaming(
    app_server, fake_openrouter, token, monkeypatch
):
    # Without this, the stored `streaming` answer of a turn that never started refused every
    # later turn of the conversation ("an answer is still running").
    storing = threading.Event()

    def sent_ahead_then_storing():
        wait_for_requests(fake_openrouter, 1)
        storing.set()

    slow_store(monkeypatch, 0.5, before=sent_ahead_then_storing)
    fake_openrouter.slow_token_delay = 0.05
    body = {
        "model": "fake/slow",
        "session_id": "gone-1",
        "messages": [{"role": "user", "content": "hello"}],
    }
    payload = json.dumps(body).encode()
    host, port = app_server.url.removeprefix("http://").split(":")
    # A raw socket: an HTTP client waits for the response's headers, which come after the store.
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(
            b"POST /api/chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        assert storing.wait(5)
    # The client has gone away before the response started.
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=app_server.url, headers=headers, timeout=10) as client:
        assert fake_openrouter.wait_closed_streams(1, timeout=5), "the request sent ahead is open"
        deadline = time.monotonic() + 5
        while (
            not Message.objects.filter(role="assistant").exists()
            or Message.objects.filter(status="streaming").exists()
        ):
            assert time.monotonic() < deadline, "the unstarted answer stayed streaming"
            time.sleep(0.02)
        answer = Message.objects.get(role="assistant")
        assert answer.status == "cancelled"
        assert Message.objects.filter(role="user", content="hello").exists(), "the question is kept"

        # The conversation takes its next turn.
        with client.stream(
            "POST",
            "/api/chat/stream",
            json={**body, "model": "fake/ok", "messages": [{"role": "user", "content": "again"}]},
        ) as again:
            assert again.status_code == 200
            text = "".join(again.iter_text())
        assert text.endswith("data: [DONE]\n\n")
    answers = Message.objects.filter(role="assistant").order_by("pk")
    assert [(m.status, m.content) for m in answers] == [
        ("cancelled", ""),
        ("complete", "Echo: again done."),
    ]


async def test_chunks_that_arrive_before_a_drop_during_the_store_are_kept(
    aapi, fake_openrouter, monkeypatch
):
    # The upstream sends a first token and drops the connection while the turn is still being
    # stored: what arrived is read as it arrives, so the partial answer is not lost with the
    # connection (aiohttp raises a dropped connection's error before what it had buffered).
    fake_openrouter.token_delay = 0.05  # the first token 50 ms in, the drop 50 ms later
    slow_store(monkeypatch, 0.5, before=lambda: wait_for_requests(fake_openrouter, 1))
    events, _ = await read_stream(await post_stream(aapi, model="fake/drop"))

    assert content_of(events).startswith("Echo: ")
    assert "dropped mid-stream" in content_of(events)
    answer = await Message.objects.aget(role="assistant")
    assert answer.status == Message.Status.ERROR
    assert answer.content == "Echo: "


async def test_a_turn_stopped_before_it_runs_is_cleaned_up(user, fake_openrouter):
    """Stop in the same moment the turn starts: it never runs, yet it leaves no running turn,
    no `streaming` answer and no open request behind."""
    import asyncio

    from chat import orchestrator, turns

    fake_openrouter.slow_token_delay = 0.05
    turn_input = services.TurnInput(messages=[{"role": "user", "content": "hi"}], model="fake/slow")
    planned = await sync_to_async(services.plan_turn)(user, turn_input)
    head = await orchestrator.head_start(user.pk, planned)
    prepared = await sync_to_async(services.store_planned_turn)(user, turn_input, planned)
    await asyncio.to_thread(wait_for_requests, fake_openrouter, 1)
    turn = services.start_turn(prepared, head)
    turn.cancel()  # before the turn's task has taken a step
    await asyncio.wait_for(turn.done.wait(), 5)

    assert not turns.is_running(prepared.conversation.pk)
    assert turn.started is False
    assert await asyncio.to_thread(fake_openrouter.wait_closed_streams, 1, 5)
    for _ in range(100):
        answer = await Message.objects.aget(pk=prepared.assistant.pk)
        if answer.status != Message.Status.STREAMING:
            break
        await asyncio.sleep(0.02)
    assert answer.status == Message.Status.CANCELLED
