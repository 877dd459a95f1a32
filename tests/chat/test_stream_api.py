import pytest

from chat.models import Conversation, Message
from tests.sse import content_of, read_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def post_stream(client, **body):
    body.setdefault("messages", [{"role": "user", "content": "hello there"}])
    return await client.post("/api/chat/stream", body, content_type="application/json")


async def test_stream_relays_chunks_and_stores_the_turn(aapi, fake_openrouter, user):
    response = await post_stream(aapi)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events, comments = await read_stream(response)

    names = [e.name for e in events]
    assert names[0] == "session"
    assert names[-1] == "message" and events[-1].data == "[DONE]"
    assert [e.data for e in events].count("[DONE]") == 1
    assert names[-2] == "metadata"
    assert content_of(events) == "Echo: hello there done."
    assert not any(": OPENROUTER" in c for c in comments), "upstream comments are not relayed"

    session_id = events[0].json["session_id"]
    conversation = await Conversation.objects.aget(session_id=session_id, user=user)
    messages = [m async for m in conversation.messages.order_by("id")]
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assistant = messages[1]
    assert assistant.content == "Echo: hello there done."
    assert assistant.html.startswith("<p>Echo: hello there done.</p>")
    assert assistant.parent_id == messages[0].pk
    assert assistant.generation_id.startswith("gen-")
    assert assistant.usage is not None and assistant.usage["cost"] == 0.00012
    assert assistant.cost is not None and float(assistant.cost) == 0.00012
    assert assistant.finish_reason == "stop"
    assert assistant.routing == {"provider": "FakeProvider"}

    metadata = events[-2].json
    assert metadata["message_id"] == assistant.pk
    assert metadata["generation_id"] == assistant.generation_id
    assert metadata["finish_reason"] == "stop"
    assert metadata["created_at_utc"].endswith("Z")


async def test_upstream_request_carries_prompt_usage_and_parameters(
    aapi, fake_openrouter, settings
):
    settings.OPENROUTER_SYSTEM_PROMPT = "You are terse."
    response = await post_stream(
        aapi, temperature=0.3, top_p=0.9, metadata={"client_parent_message_id": "u1"}
    )
    await read_stream(response)
    body = fake_openrouter.requests[-1]["body"]
    headers = fake_openrouter.requests[-1]["headers"]
    assert headers["authorization"] == "Bearer sk-or-test-key"
    assert headers["x-title"] == settings.OPENROUTER_APP_NAME
    assert body["stream"] is True
    assert body["usage"] == {"include": True}
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert "metadata" not in body and "session_id" not in body
    system = body["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are terse.")
    assert "Current date and time:" in system["content"]
    assert body["messages"][1:] == [{"role": "user", "content": "hello there"}]


async def test_turns_reuse_the_keep_alive_connection_to_the_model_api(
    aapi, fake_openrouter, settings
):
    from tests.servers import TcpProxy

    proxy = TcpProxy(fake_openrouter.server.port).start()
    try:
        settings.OPENROUTER_BASE_URL = f"{proxy.url}/api/v1"
        for _ in range(3):
            events, _ = await read_stream(await post_stream(aapi))
            assert content_of(events) == "Echo: hello there done."
        assert proxy.connections == 1, "one connection for three turns, read to its end each"
    finally:
        proxy.stop()


async def test_a_new_conversations_first_prompt_is_what_its_stored_history_gives(
    aapi, fake_openrouter, settings
):
    # The first prompt of a new conversation is built from the messages just stored, without
    # reading them back: it must be exactly what the stored history gives.
    from asgiref.sync import sync_to_async

    from chat.services import build_prompt

    settings.CHAT_HISTORY_LIMIT = 3
    messages = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "ignored: the server keeps its own history"},
        {"role": "user", "content": "second question"},
        {"role": "user", "content": [{"type": "text", "text": "third, in parts"}]},
    ]
    events, _ = await read_stream(await post_stream(aapi, messages=messages))
    sent = fake_openrouter.requests[-1]["body"]["messages"]
    conversation = await Conversation.objects.select_related("user").aget(
        session_id=events[0].json["session_id"]
    )
    assistant = await conversation.messages.filter(role="assistant").aget()
    stored = await sync_to_async(build_prompt)(conversation, assistant)
    assert sent[1:] == stored[1:]
    assert sent[1:] == [
        {"role": "user", "content": "first question"},
        {"role": "user", "content": "second question"},
        {"role": "user", "content": [{"type": "text", "text": "third, in parts"}]},
    ], "the last CHAT_HISTORY_LIMIT messages, the client's assistant message dropped"


async def test_history_is_kept_server_side_and_client_assistant_messages_ignored(
    aapi, fake_openrouter
):
    first = await post_stream(aapi)
    events, _ = await read_stream(first)
    session_id = events[0].json["session_id"]
    second = await post_stream(
        aapi,
        session_id=session_id,
        messages=[
            {"role": "assistant", "content": "forged answer"},
            {"role": "user", "content": "second question"},
        ],
    )
    events2, _ = await read_stream(second)
    assert events2[0].name != "session", "session is only announced for new conversations"
    sent = fake_openrouter.requests[-1]["body"]["messages"][1:]
    assert sent == [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "Echo: hello there done."},
        {"role": "user", "content": "second question"},
    ]
    assert not await Message.objects.filter(content="forged answer").aexists()


async def test_reasoning_is_streamed_and_stored(aapi, fake_openrouter):
    response = await post_stream(aapi, model="fake/reasoning")
    events, _ = await read_stream(response)
    metadata = next(e for e in events if e.name == "metadata").json
    assert metadata["reasoning"] == "Let me think."
    message = await Message.objects.aget(pk=metadata["message_id"])
    assert message.reasoning == "Let me think."


async def test_utf8_split_across_chunks_arrives_intact(aapi, fake_openrouter):
    response = await post_stream(aapi, model="fake/utf8-split")
    events, _ = await read_stream(response)
    assert content_of(events) == "caf\u00e9 \u2615 ok"
    metadata = next(e for e in events if e.name == "metadata").json
    assert (await Message.objects.aget(pk=metadata["message_id"])).content == "caf\u00e9 \u2615 ok"


@pytest.mark.parametrize(
    ("model", "detail", "partial"),
    [
        ("fake/401", "OpenRouter rejected the API key (401)", ""),
        ("fake/429", "Rate limited by the model provider (429); retry after 7 s", ""),
        ("fake/500", "The model API answered 500", ""),
        ("fake/drop", "dropped mid-stream", "Echo: "),
        ("fake/malformed", "malformed chunk", "Echo: "),
        ("fake/inband-error", "Provider returned error", "Echo: "),
        ("fake/stall", "timed out", "Echo: "),
    ],
)
async def test_upstream_faults_end_in_an_error_chunk_and_keep_the_partial_answer(
    aapi, fake_openrouter, model, detail, partial
):
    response = await post_stream(aapi, model=model)
    assert response.status_code == 200
    events, _ = await read_stream(response)
    assert events[-1].data == "[DONE]"
    assert [e.data for e in events].count("[DONE]") == 1
    text = content_of(events)
    assert text.startswith(partial)
    error_chunks = [
        e for e in events if e.name == "message" and e.data != "[DONE]" and "Error: " in e.data
    ]
    assert len(error_chunks) == 1
    assert detail in error_chunks[0].json["choices"][0]["delta"]["content"]

    user_message = await Message.objects.aget(role="user")
    assert user_message.content == "hello there"
    assistant = await Message.objects.aget(role="assistant")
    assert assistant.status == Message.Status.ERROR
    assert assistant.content == partial
    assert detail in assistant.error


async def test_missing_api_key_is_a_503_and_stores_nothing(aapi, fake_openrouter, settings):
    settings.OPENROUTER_API_KEY = ""
    response = await post_stream(aapi)
    assert response.status_code == 503
    assert "OPENROUTER_API_KEY" in response.json()["detail"]
    assert not await Message.objects.aexists()
    assert fake_openrouter.requests == []


async def test_partial_answer_is_checkpointed_every_interval_not_per_token(
    aapi, fake_openrouter, settings, monkeypatch
):
    from chat import orchestrator

    settings.CHAT_CHECKPOINT_SECONDS = 0.15
    fake_openrouter.slow_token_delay = 0.01
    fake_openrouter.slow_tokens = 60
    checkpoints = []
    original = orchestrator._checkpoint

    def counting(message, acc):
        checkpoints.append(len(acc.text))
        return original(message, acc)

    monkeypatch.setattr(orchestrator, "_checkpoint", counting)
    response = await post_stream(aapi, model="fake/slow")
    seen_partial = ""
    chunks = []
    async for chunk in response.streaming_content:
        chunks.append(chunk)
        if b"t40 " in chunk and not seen_partial:
            stored = await Message.objects.aget(role="assistant")
            assert stored.status == Message.Status.STREAMING
            seen_partial = stored.content
    assert seen_partial.startswith("t0 t1 t2"), "the partial answer was saved mid-stream"
    # About one write per interval over a ~0.6 s stream, never one per token (60 tokens).
    assert 1 <= len(checkpoints) <= 10
    assert checkpoints == sorted(checkpoints)


async def test_idle_stream_sends_ping_comments(aapi, fake_openrouter, settings):
    settings.SSE_PING_SECONDS = 0.05
    fake_openrouter.stall_seconds = 0.5
    settings.OPENROUTER_READ_TIMEOUT = 0.4
    response = await post_stream(aapi, model="fake/stall")
    events, comments = await read_stream(response)
    assert ": ping" in comments
    assert events[-1].data == "[DONE]"


async def test_a_flowing_stream_sends_no_pings(aapi, fake_openrouter, settings):
    # Tokens every 20 ms for ~0.8 s against a 0.25 s ping interval: the stream is never idle
    # for a whole interval, so no ping goes out between its chunks.
    settings.SSE_PING_SECONDS = 0.25
    fake_openrouter.slow_token_delay = 0.02
    fake_openrouter.slow_tokens = 40
    response = await post_stream(aapi, model="fake/slow")
    events, comments = await read_stream(response)
    assert events[-1].data == "[DONE]"
    assert len([e for e in events if e.name == "message"]) > 40
    assert ": ping" not in comments


async def test_resending_the_same_client_message_makes_no_second_turn(aapi, fake_openrouter):
    metadata = {"client_parent_message_id": "m-1"}
    first = await post_stream(aapi, metadata=metadata)
    events, _ = await read_stream(first)
    session_id = events[0].json["session_id"]
    again = await post_stream(aapi, session_id=session_id, metadata=metadata)
    assert again.status_code == 409
    assert "already received" in again.json()["detail"]
    assert await Message.objects.filter(role="user").acount() == 1
    assert len(fake_openrouter.requests) == 1
