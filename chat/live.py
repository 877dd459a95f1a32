"""Live pages: a running turn's events become coalesced HTML frames for every open tab.

The publisher runs next to the turn (in the process that owns it). It turns events into
rendered partials swapped by id, at most one content frame per CHAT_FRAME_SECONDS, and fans
them out through the channel layer group of the conversation, so any tab in any process gets
them. It also listens on the conversation's control group, so Stop works from any process.
"""

import asyncio
import contextlib
import logging
from types import SimpleNamespace

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.template.defaultfilters import linebreaksbr
from django.template.loader import render_to_string

from chat import history
from chat.models import Conversation
from chat.rendering import StreamingMarkdown, render_markdown
from chat.turns import END, Event, Turn
from integrations.services import answer_tool_approval

log = logging.getLogger(__name__)


def frames_group(conversation_id: int) -> str:
    return f"chat.{conversation_id}"


def control_group(conversation_id: int) -> str:
    return f"chat.{conversation_id}.control"


async def broadcast(conversation_id: int, html: str) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(frames_group(conversation_id), {"type": "chat.frame", "html": html})


async def request_cancel(conversation_id: int) -> None:
    """Ask whichever process runs this conversation's turn to stop it."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(control_group(conversation_id), {"type": "turn.cancel"})


# Rendering ----------------------------------------------------------------------------------


def _turn_context(conversation: Conversation, view: history.TurnView) -> dict:
    return {"turn": view, "session_id": conversation.session_id, "conversation": conversation}


def render_turn(
    conversation: Conversation,
    root_id: int,
    *,
    append: bool,
    live: Turn | None,
    view: history.TurnView | None = None,
):
    """A turn read fresh from the database (or given as `view`, when the caller has just
    stored its messages), as an out-of-band swap (or an append)."""
    if view is None:
        view = history.turn_messages(conversation.pk, root_id)
    if view is None:
        return ""
    history.prepare_for_page(view.messages, conversation.user_id)
    history.show_live_text(view.messages, live)
    html = render_to_string("chat/chat.html#turn", _turn_context(conversation, view))
    if append:
        return (
            f'<div hx-swap-oob="beforeend:#messages">{html}</div>'
            '<div id="empty-state" hx-swap-oob="delete"></div>'
        )
    return html


def render_content(
    message_id: int, content: str, reasoning: str, markdown: StreamingMarkdown | None = None
) -> str:
    """A content frame: the streaming message's body (and reasoning) so far.

    This is the hot path of live pages (tens of frames per answer per tab), so it formats the
    markup of the `body` and `reasoning` partials of chat/chat.html directly instead of
    rendering them; tests/chat/test_live.py checks that both produce the same HTML."""
    html = markdown.render(content) if markdown is not None else render_markdown(content)
    frame = (
        f'<div id="msg-{message_id}-body" class="msg-body markdown" hx-disable>{html}'
        '<span class="cursor" aria-hidden="true"></span></div>'
    )
    if reasoning:
        frame += (
            f'<div id="msg-{message_id}-reasoning" class="reasoning-body" hx-disable>'
            f"{linebreaksbr(reasoning, autoescape=True)}</div>"
        )
    return frame


def render_turn_state(running: bool) -> str:
    return render_to_string("chat/chat.html#turn-state", {"running": running})


def render_notice(message: str, kind: str = "info") -> str:
    return render_to_string("chat/notice.html", {"message": message, "kind": kind})


def render_conversation_item(conversation: Conversation, *, prepend: bool = False) -> str:
    html = render_to_string(
        "chat/chat.html#conversation-item", {"item": conversation, "conversation": conversation}
    )
    if prepend:
        return f'<div hx-swap-oob="afterbegin:#conversation-list">{html}</div>'
    return html


def render_title(conversation: Conversation) -> str:
    return render_to_string("chat/chat.html#chat-title", {"conversation": conversation})


# Publishing ---------------------------------------------------------------------------------


async def answer_approval(conversation_id: int, user_id: int, call_id: str, approve: bool):
    """Answer a tool approval card from any process: the waiting turn's process settles it
    (only for the user who owns the call)."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(
            control_group(conversation_id),
            {"type": "turn.approve", "user_id": user_id, "call_id": call_id, "approve": approve},
        )


async def _listen_for_control(layer, channel: str, turn: Turn) -> None:
    while True:
        message = await layer.receive(channel)
        if message.get("type") == "turn.cancel":
            turn.cancel()
        elif message.get("type") == "turn.approve":
            owner = SimpleNamespace(pk=message.get("user_id"))
            answer_tool_approval(owner, str(message.get("call_id")), bool(message.get("approve")))


_TICK = Event("tick", None)
_NO_REDRAW = frozenset({"metadata", "session"})


async def publish(
    turn: Turn,
    queue: asyncio.Queue[Event],
    conversation: Conversation,
    root_id: int,
    first_exchange: bool = True,
) -> None:
    """Relay a running turn to the pages until it ends (not tied to any tab); after a
    conversation's first exchange, name it."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(control_group(conversation.pk), channel)
    listener = asyncio.create_task(_listen_for_control(layer, channel, turn))
    interval = settings.CHAT_FRAME_SECONDS
    loop = asyncio.get_running_loop()
    last_frame = 0.0
    dirty = False
    # A content frame is due `interval` after the last one: one timer per frame drops a tick
    # into the queue, rather than a timeout around every event.
    tick: asyncio.TimerHandle | None = None
    markdown = StreamingMarkdown()
    drawn_message_id = turn.assistant_message_id  # the message the page has an element for
    try:
        while True:
            event = await queue.get()
            if event is END:
                break
            if event is _TICK:
                tick = None
            elif event.name == "message":
                dirty = True
                if tick is not None:
                    continue
                delay = last_frame + interval - loop.time()
                if delay > 0:
                    tick = loop.call_later(delay, queue.put_nowait, _TICK)
                    continue
            elif event.name not in _NO_REDRAW:
                # Tool calls and notices change the turn's shape: redraw it whole. (A stored
                # answer needs no redraw: the next tool event or the end redraws; a new
                # conversation's `session` event is for API clients, the page has its id.)
                if event.name == "notice":
                    await broadcast(conversation.pk, render_notice(event.data.get("message", "")))
                html = await sync_to_async(render_turn)(
                    conversation, root_id, append=False, live=turn
                )
                await broadcast(conversation.pk, html)
                drawn_message_id = turn.assistant_message_id
                dirty = False
                last_frame = loop.time()
                continue
            else:
                continue
            if not dirty:
                continue
            message_id = turn.assistant_message_id
            if message_id is not None and message_id != drawn_message_id:
                # A new model round stores a new message: draw it before filling it.
                markdown = StreamingMarkdown()
                html = await sync_to_async(render_turn)(
                    conversation, root_id, append=False, live=turn
                )
                drawn_message_id = message_id
                await broadcast(conversation.pk, html)
            elif message_id is not None:
                html = render_content(message_id, turn.content, turn.reasoning, markdown)
                await broadcast(conversation.pk, html)
            dirty = False
            last_frame = loop.time()
    finally:
        if tick is not None:
            tick.cancel()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await layer.group_discard(control_group(conversation.pk), channel)
        turn.unsubscribe(queue)
    kept = turn.final_messages
    # Drawn from the messages the turn ended with when it holds them all, else read back.
    view = history.TurnView(root_id, kept) if kept and kept[0].pk == root_id else None
    final = await sync_to_async(render_turn)(
        conversation, root_id, append=False, live=None, view=view
    )
    await broadcast(conversation.pk, final + render_turn_state(False))
    if first_exchange:
        await _maybe_title(conversation, root_id)


async def _maybe_title(conversation: Conversation, root_id: int) -> None:
    """After the first exchange, ask the model for a short title (kept heuristic on failure)."""
    from chat import services

    updated = await services.generate_title(conversation, root_id)
    if updated is not None:
        await broadcast(conversation.pk, render_conversation_item(updated) + render_title(updated))


def start(
    turn: Turn, conversation: Conversation, root_id: int, first_exchange: bool = True
) -> asyncio.Task:
    # Subscribe now, before the turn's task first runs, so its end cannot be missed.
    queue = turn.subscribe()
    task = asyncio.get_running_loop().create_task(
        publish(turn, queue, conversation, root_id, first_exchange),
        name=f"publish-{conversation.pk}",
    )
    _publishers.add(task)
    task.add_done_callback(_publishers.discard)
    return task


_publishers: set[asyncio.Task] = set()
