"""The page's WebSocket: a thin async adapter between the htmx ws extension and chat.services.

Frames from the page are JSON objects with an `action` (htmx's ws-send serialises the form);
frames to the page are HTML fragments swapped by id. Every conversation goes through the one
access helper; another user's id closes the socket (4404) without sending anything.
"""

import asyncio
import contextlib
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import Http404
from django.template.loader import render_to_string

from chat import history, live, services, turns
from chat.models import Conversation, Message

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404


class ChatConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None
    _recheck: asyncio.Task | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not (user.is_authenticated and user.is_active and user.is_staff):
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.user = user
        await self.accept()
        self._recheck = asyncio.create_task(self._recheck_user())

    async def disconnect(self, code: int) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recheck
        if self.conversation is not None:
            await self.channel_layer.group_discard(
                live.frames_group(self.conversation.pk), self.channel_name
            )

    async def _recheck_user(self) -> None:
        """A deactivated user's open sockets close (sessions alone would keep them open)."""
        while True:
            await asyncio.sleep(settings.WS_USER_RECHECK_SECONDS)
            if not await self._user_is_active():
                await self.close(code=CLOSE_UNAUTHORIZED)
                return

    async def _user_is_active(self) -> bool:
        return (
            await get_user_model()
            .objects.filter(pk=self.user.pk, is_active=True, is_staff=True)
            .aexists()
        )

    # Frames from the page ---------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._notice("This socket only takes JSON text frames.", "error")
            return
        if len(text_data) > settings.WS_MAX_FRAME_BYTES:
            await self._notice("That message is too large to send.", "error")
            return
        try:
            data = json.loads(text_data)
        except ValueError:
            await self._notice("The page sent a malformed frame; reload the page.", "error")
            return
        if not isinstance(data, dict):
            await self._notice("The page sent a malformed frame; reload the page.", "error")
            return
        if not await self._user_is_active():
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        handler = {
            "hello": self.on_hello,
            "send": self.on_send,
            "stop": self.on_stop,
            "retry": self.on_retry,
            "approve": self.on_approve,
        }.get(str(data.get("action")))
        if handler is None:
            await self._notice("Unknown action.", "error")
            return
        try:
            await handler(data)
        except Http404:
            await self.close(code=CLOSE_NOT_FOUND)

    async def on_hello(self, data: dict[str, Any]) -> None:
        """The page (re)connected: follow its conversation and bring it up to date."""
        session_id = str(data.get("session_id") or "")
        if not session_id or not await self._follow(session_id):
            return  # a new chat: nothing to follow until its first message
        assert self.conversation is not None
        try:
            last_turn = int(data.get("last_turn") or 0)
        except (TypeError, ValueError):
            last_turn = 0
        await self.send(text_data=await database_sync_to_async(self._resync)(last_turn))

    def _resync(self, last_turn: int) -> str:
        conversation = self.conversation
        assert conversation is not None
        messages, _ = history.page_of_messages(conversation)
        running = turns.get_turn(conversation.pk)
        parts = []
        for view in history.group_turns(messages):
            if view.root_id < last_turn:
                continue
            parts.append(
                live.render_turn(
                    conversation, view.root_id, append=view.root_id > last_turn, live=running
                )
            )
        parts.append(live.render_turn_state(any(m.status == "streaming" for m in messages)))
        return "".join(parts)

    async def on_send(self, data: dict[str, Any]) -> None:
        text = str(data.get("message") or "").strip()
        ids = data.get("attachment_ids") or []
        ids = [ids] if isinstance(ids, str) else ids
        if not isinstance(ids, list):
            ids = []
        if not text and not ids:
            return
        if len(text) > services.MAX_MESSAGE_CHARS:
            await self._notice("That message is too long.", "error")
            return
        client_id = str(data.get("client_id") or "")[:100]
        session_id = str(data.get("session_id") or "")[:100]
        if session_id and (self.conversation is None or self.conversation.session_id != session_id):
            await self._follow(session_id)
        content: str | list[dict[str, Any]] = text
        if ids:
            # Files alone are a message too: the model gets them without a text part.
            content = [{"type": "text", "text": text}] if text else []
            content += [{"type": "attachment", "attachment_id": str(i)[:100]} for i in ids[:20]]
        turn_input = services.TurnInput(
            messages=[{"role": "user", "content": content}],
            session_id=session_id or None,
            client_parent_message_id=client_id,
        )
        # A double click or a resend after reconnecting (the same client_id) makes no second
        # turn: prepare_turn raises DuplicateMessage and _start drops it.
        await self._start(turn_input)

    async def on_retry(self, data: dict[str, Any]) -> None:
        if self.conversation is None:
            return
        try:
            message_id = int(data.get("message_id") or 0)
        except (TypeError, ValueError):
            await self._notice("Nothing to retry.", "error")
            return
        turn_input = services.TurnInput(
            messages=[], session_id=self.conversation.session_id, retry_of=message_id
        )
        await self._start(turn_input)

    async def on_approve(self, data: dict[str, Any]) -> None:
        """An approval card's answer, delivered to the process whose turn is waiting."""
        call_id = str(data.get("call_id") or "")[:200]
        approve = str(data.get("approve")).lower() in {"1", "true", "yes"}
        if self.conversation is None or not call_id:
            return
        await live.answer_approval(self.conversation.pk, self.user.pk, call_id, approve)

    async def on_stop(self, data: dict[str, Any]) -> None:
        if self.conversation is not None:
            await live.request_cancel(self.conversation.pk)

    # Helpers ----------------------------------------------------------------------------------

    async def _follow(self, session_id: str) -> bool:
        """Follow the user's conversation; False when no conversation has this id yet.

        Another user's conversation raises Http404 (the socket closes)."""
        conversation = await Conversation.objects.filter(session_id=session_id).afirst()
        if conversation is None:
            return False
        if conversation.user_id != self.user.pk:
            raise Http404("Conversation not found")
        if self.conversation is not None and self.conversation.pk != conversation.pk:
            await self.channel_layer.group_discard(
                live.frames_group(self.conversation.pk), self.channel_name
            )
        self.conversation = conversation
        await self.channel_layer.group_add(live.frames_group(conversation.pk), self.channel_name)
        return True

    async def _start(self, turn_input: services.TurnInput) -> None:
        retry = turn_input.retry_of is not None
        try:
            prepared, root_id, first, frame = await database_sync_to_async(self._prepare)(
                turn_input, append=not retry
            )
        except turns.TurnInProgress:
            await self._notice("Wait for the current answer to finish, or stop it.", "error")
            return
        except services.DuplicateMessage:
            return  # the same send arrived twice: its turn already exists
        conversation = prepared.conversation
        if self.conversation is None or self.conversation.pk != conversation.pk:
            self.conversation = conversation
            await self.channel_layer.group_add(
                live.frames_group(conversation.pk), self.channel_name
            )
        if first and not retry:
            # The first message of a conversation (even one that files were uploaded to
            # first) gives the page its address and the sidebar its entry.
            await self.send(text_data=await database_sync_to_async(self._announce)(conversation))
        turn = services.start_turn(prepared)
        await live.broadcast(conversation.pk, frame + live.render_turn_state(True))
        live.start(turn, conversation, root_id, first_exchange=first)

    def _prepare(self, turn_input: services.TurnInput, append: bool):
        """Store the turn and draw it, in one trip to the database thread.

        Returns the prepared turn, its root (user) message id, whether it is the conversation's
        first exchange, and the frame that draws it."""
        prepared = services.prepare_turn(self.user, turn_input)
        conversation = prepared.conversation
        view = None
        if append and prepared.user_message is not None:
            # A new turn is the user message just stored and the answer to come: no need to
            # read them back.
            root_id = prepared.user_message.pk
            view = history.TurnView(root_id, [prepared.user_message, prepared.assistant])
        else:
            root_id = services.turn_root_of(prepared.assistant)
        first = prepared.first_exchange or (
            # A retry answers an earlier question: is that question the first one?
            not append
            and not conversation.messages.filter(role=Message.Role.USER, pk__lt=root_id).exists()
        )
        frame = live.render_turn(conversation, root_id, append=append, live=None, view=view)
        return prepared, root_id, first, frame

    def _announce(self, conversation: Conversation) -> str:
        """A new conversation: the page learns its id, and the sidebar lists it."""
        return (
            render_to_string("chat/chat.html#session-input", {"conversation": conversation})
            + live.render_conversation_item(conversation, prepend=True)
            + live.render_title(conversation)
        )

    async def _notice(self, message: str, kind: str = "info") -> None:
        await self.send(text_data=await database_sync_to_async(live.render_notice)(message, kind))

    # Frames to the page -----------------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Frames go straight out: the base class first closes stale database connections in a
        # thread, a hop per frame per page that frames (which touch no database) do not need.
        if message["type"] == "chat.frame":
            await self.send(text_data=message["html"])
            return
        await super().dispatch(message)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])
