import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator

from chat.models import Conversation, Message
from tests.pages import app, connect, frames_until, send, turn_finished

pytestmark = pytest.mark.django_db(transaction=True)


async def test_sending_a_message_streams_frames_and_stores_the_turn(user, fake_openrouter):
    fake_openrouter.token_delay = 0.01
    ws = await connect(user)
    await send(ws, action="send", message="hello page", client_id="c-1", session_id="")
    frames = await frames_until(ws, turn_finished)

    conversation = await Conversation.objects.aget(user=user)
    assert f'value="{conversation.session_id}"' in frames[0], "the page learns the new id"
    appended = next(f for f in frames if "beforeend:#messages" in f)
    assert "hello page" in appended and "status-streaming" in appended
    assert '<div id="empty-state" hx-swap-oob="delete">' in appended
    final = frames[-1]
    assert "status-complete" in final
    assert "Echo: hello page done." in final
    messages = [m async for m in conversation.messages.order_by("pk")]
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[0].client_message_id == "c-1"
    await ws.disconnect()


async def test_content_frames_are_coalesced_not_one_per_token(user, fake_openrouter, settings):
    settings.CHAT_FRAME_SECONDS = 0.2
    fake_openrouter.reply_tokens = [f"w{i} " for i in range(40)]
    fake_openrouter.token_delay = 0.01
    ws = await connect(user)
    await send(ws, action="send", message="go", client_id="c-2", session_id="")
    frames = await frames_until(ws, turn_finished)
    body_frames = [f for f in frames if f.startswith('<div id="msg-') and "-body" in f[:40]]
    assert 1 <= len(body_frames) < 10, len(body_frames)
    assert "w39" in frames[-1]
    await ws.disconnect()


async def test_double_send_with_one_client_id_makes_one_turn(user, fake_openrouter):
    ws = await connect(user)
    await send(ws, action="send", message="once", client_id="same", session_id="")
    await frames_until(ws, turn_finished)
    conversation = await Conversation.objects.aget(user=user)
    await send(
        ws, action="send", message="once", client_id="same", session_id=conversation.session_id
    )
    later = []
    while not await ws.receive_nothing(timeout=0.3):
        later.append(await ws.receive_from())
    assert not any("beforeend:#messages" in frame for frame in later)
    assert await Message.objects.filter(role="user").acount() == 1
    assert len([r for r in fake_openrouter.requests if r["body"].get("stream")]) == 1
    await ws.disconnect()


async def test_another_users_conversation_closes_the_socket_and_sends_nothing(
    user, other_user, fake_openrouter
):
    theirs = await Conversation.objects.acreate(user=other_user)
    await Message.objects.acreate(conversation=theirs, role="user", content="private")
    ws = await connect(user)
    await send(ws, action="hello", session_id=theirs.session_id, last_turn=0)
    output = await ws.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 4404}

    ws = await connect(user)
    await send(ws, action="send", message="x", client_id="c", session_id=theirs.session_id)
    output = await ws.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 4404}
    assert await Message.objects.acount() == 1
    assert fake_openrouter.requests == []


async def test_unauthenticated_or_non_staff_sockets_are_refused(make_user):
    from django.contrib.auth.models import AnonymousUser

    for who in (AnonymousUser(), await asyncio.to_thread(make_user, "viewer", staff=False)):
        communicator = WebsocketCommunicator(app, "/ws/chat/")
        communicator.scope["user"] = who
        connected, code = await communicator.connect()
        assert not connected
        assert code == 4401


async def test_bad_frames_get_a_clear_notice_and_the_socket_survives(user, settings):
    settings.WS_MAX_FRAME_BYTES = 1000
    ws = await connect(user)
    await ws.send_to(text_data="{not json")
    assert "malformed frame" in await ws.receive_from()
    await ws.send_to(text_data=json.dumps({"action": "send", "message": "x" * 2000}))
    assert "too large" in await ws.receive_from()
    await ws.send_to(text_data=json.dumps(["a list"]))
    assert "malformed frame" in await ws.receive_from()
    await ws.send_to(text_data=json.dumps({"action": "explode"}))
    assert "Unknown action" in await ws.receive_from()
    await ws.send_to(bytes_data=b"\x00\x01")
    assert "JSON text frames" in await ws.receive_from()
    await ws.disconnect()


async def test_stop_cancels_the_turn_and_the_upstream_request(user, fake_openrouter, settings):
    settings.OPENROUTER_DEFAULT_MODEL = "fake/slow"
    fake_openrouter.slow_token_delay = 0.02
    ws = await connect(user)
    await send(ws, action="send", message="long", client_id="c-3", session_id="")
    await frames_until(ws, lambda f: "t3 " in f)
    await send(ws, action="stop")
    frames = await frames_until(ws, turn_finished)
    assert "status-cancelled" in frames[-1]
    assert "Stopped." in frames[-1]
    assert await asyncio.to_thread(fake_openrouter.wait_closed_streams, 1)
    assistant = await Message.objects.aget(role="assistant")
    assert assistant.status == Message.Status.CANCELLED
    assert assistant.content.startswith("t0 t1 t2 t3")
    await ws.disconnect()


async def test_a_second_tab_follows_the_running_turn(user, fake_openrouter, settings):
    settings.OPENROUTER_DEFAULT_MODEL = "fake/slow"
    fake_openrouter.slow_token_delay = 0.01
    fake_openrouter.slow_tokens = 60
    first = await connect(user)
    await send(first, action="send", message="shared", client_id="c-4", session_id="")
    await frames_until(first, lambda f: "t2 " in f)
    conversation = await Conversation.objects.aget(user=user)
    second = await connect(user)
    await send(second, action="hello", session_id=conversation.session_id, last_turn=0)
    resync = await second.receive_from()
    assert "shared" in resync and "status-streaming" in resync
    frames = await frames_until(second, turn_finished)
    assert "t59" in frames[-1] and "status-complete" in frames[-1]
    await first.disconnect()
    await second.disconnect()


async def test_closing_every_tab_does_not_stop_the_turn(user, fake_openrouter, settings):
    settings.OPENROUTER_DEFAULT_MODEL = "fake/slow"
    fake_openrouter.slow_token_delay = 0.005
    fake_openrouter.slow_tokens = 40
    ws = await connect(user)
    await send(ws, action="send", message="keep going", client_id="c-5", session_id="")
    await frames_until(ws, lambda f: "t1 " in f)
    await ws.disconnect()
    for _ in range(100):
        assistant = await Message.objects.aget(role="assistant")
        if assistant.status != Message.Status.STREAMING:
            break
        await asyncio.sleep(0.05)
    assert assistant.status == Message.Status.COMPLETE
    assert assistant.content.strip().endswith("t39")


async def test_upstream_error_shows_in_the_message_and_retry_answers_again(
    user, fake_openrouter, settings
):
    settings.OPENROUTER_DEFAULT_MODEL = "fake/429"
    ws = await connect(user)
    await send(ws, action="send", message="fail please", client_id="c-6", session_id="")
    final = (await frames_until(ws, turn_finished))[-1]
    assert "status-error" in final
    assert "Rate limited by the model provider (429); retry after 7 s" in final
    failed = await Message.objects.aget(role="assistant")
    assert failed.status == Message.Status.ERROR
    assert 'name="action" value="retry"' in final

    conversation = await Conversation.objects.aget(user=user)
    conversation.model = "fake/ok"
    await conversation.asave()
    await send(ws, action="retry", message_id=failed.pk)
    final = (await frames_until(ws, turn_finished))[-1]
    assert "status-complete" in final and "Echo: fail please done." in final
    assert f'id="msg-{failed.pk}"' not in final
    roles = [(m.role, m.status) async for m in conversation.messages.order_by("pk")]
    assert roles == [("user", "complete"), ("assistant", "complete")]
    await ws.disconnect()


async def test_missing_api_key_is_explained_in_the_message(user, fake_openrouter, settings):
    settings.OPENROUTER_API_KEY = ""
    ws = await connect(user)
    await send(ws, action="send", message="hi", client_id="c-7", session_id="")
    final = (await frames_until(ws, turn_finished))[-1]
    assert "status-error" in final and "OPENROUTER_API_KEY" in final
    assert await Message.objects.filter(role="user", content="hi").aexists()
    await ws.disconnect()


async def test_deactivated_users_socket_is_closed(user, settings):
    settings.WS_USER_RECHECK_SECONDS = 0.05
    ws = await connect(user)
    user.is_active = False
    await user.asave()
    output = await ws.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 4401}


async def test_handshake_checks_origin_and_authenticates_by_session_cookie(user):
    from importlib import import_module

    from asgiref.sync import sync_to_async
    from django.conf import settings as django_settings

    from config.routing import websocket_application

    def make_session() -> str:
        store = import_module(django_settings.SESSION_ENGINE).SessionStore()
        store["_auth_user_id"] = str(user.pk)
        store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        store["_auth_user_hash"] = user.get_session_auth_hash()
        store.save()
        return store.session_key

    key = await sync_to_async(make_session)()
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={key}".encode()

    def communicator(origin: bytes) -> WebsocketCommunicator:
        return WebsocketCommunicator(
            websocket_application,
            "/ws/chat/",
            headers=[(b"origin", origin), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie)],
        )

    evil = communicator(b"http://evil.example")
    connected, _ = await evil.connect()
    assert not connected

    own = communicator(b"http://127.0.0.1:8000")
    connected, _ = await own.connect()
    assert connected
    await own.disconnect()


async def test_only_a_conversations_first_exchange_asks_for_a_title(user, fake_openrouter):
    ws = await connect(user)
    await send(ws, action="send", message="first", client_id="t-1", session_id="")
    await frames_until(ws, turn_finished)
    conversation = await Conversation.objects.aget(user=user)
    await send(
        ws, action="send", message="second", client_id="t-2", session_id=conversation.session_id
    )
    await frames_until(ws, turn_finished)
    await asyncio.sleep(0.3)  # a title request would be made right after the final frame
    titles = [r for r in fake_openrouter.requests if not r["body"].get("stream")]
    assert len(titles) == 1
    assert "first" in titles[0]["body"]["messages"][1]["content"]
    await ws.disconnect()


async def test_a_double_send_while_its_turn_runs_is_dropped_without_a_notice(user, fake_openrouter):
    fake_openrouter.token_delay = 0.05
    ws = await connect(user)
    await send(ws, action="send", message="once", client_id="dbl", session_id="")
    # The turn is running once the page has its frame (and has learnt the conversation's id).
    before = await frames_until(ws, lambda frame: 'data-running="true"' in frame)
    conversation = await Conversation.objects.aget(user=user)
    assert any(conversation.session_id in frame for frame in before)
    await send(
        ws, action="send", message="once", client_id="dbl", session_id=conversation.session_id
    )
    frames = await frames_until(ws, turn_finished)
    assert not any("notice" in frame and "Wait for the current answer" in frame for frame in frames)
    assert await Message.objects.filter(role="user").acount() == 1
    assert await Message.objects.filter(role="assistant").acount() == 1
    await ws.disconnect()


@pytest.mark.parametrize(("model", "status"), [("fake/ok", "complete"), ("fake/429", "error")])
async def test_the_last_frame_is_drawn_from_memory_and_is_the_turn_read_back(
    user, fake_openrouter, settings, monkeypatch, model, status
):
    from asgiref.sync import sync_to_async

    from chat import history, live

    settings.OPENROUTER_DEFAULT_MODEL = model
    reads: list[tuple] = []
    read_turn = history.turn_messages

    def counting(*args, **kwargs):
        reads.append(args)
        return read_turn(*args, **kwargs)

    monkeypatch.setattr(history, "turn_messages", counting)
    ws = await connect(user)
    await send(ws, action="send", message="a **question**", client_id="c-20", session_id="")
    final = (await frames_until(ws, turn_finished))[-1]
    await ws.disconnect()
    assert reads == [], "a question and its answer are not read back for the last frame"
    assert f"status-{status}" in final

    conversation = await Conversation.objects.aget(user=user)
    question = await conversation.messages.aget(role="user")
    read_back = await sync_to_async(live.render_turn)(
        conversation, question.pk, append=False, live=None
    )
    assert final == read_back + live.render_turn_state(False)
