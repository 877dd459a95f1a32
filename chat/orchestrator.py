"""The orchestrator: runs one chat turn against the model and relays its events.

It builds the request, streams it, relays every chunk, checkpoints the partial answer every
CHAT_CHECKPOINT_SECONDS (never a write per token) and finalises the assistant message with its
status, usage, cost, generation id and reasoning. Faults become an in-band error and an `error`
message; cancellation (Stop, a client that went away) stores what arrived as `cancelled`.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal, InvalidOperation
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from chat import openrouter
from chat.models import Conversation, Message
from chat.rendering import render_markdown
from chat.services import PreparedTurn, build_prompt, message_metadata
from chat.turns import Event, Turn

log = logging.getLogger(__name__)


def error_chunk(detail: str) -> dict[str, Any]:
    """An OpenAI-format chunk that tells the client about an error in-band."""
    return {"choices": [{"index": 0, "delta": {"content": f"Error: {detail}"}}]}


async def _db(func, *args, **kwargs):
    """Run blocking ORM work off the event loop, in Django's one database thread."""
    return await sync_to_async(func, thread_sensitive=True)(*args, **kwargs)


class Accumulator:
    """Collects a streamed answer: text, reasoning, tool-call deltas, usage and routing."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason = ""
        self.usage: dict[str, Any] | None = None
        self.generation_id = ""
        self.model = ""
        self.provider = ""

    def add(self, chunk: dict[str, Any]) -> None:
        self.generation_id = chunk.get("id") or self.generation_id
        self.model = chunk.get("model") or self.model
        self.provider = chunk.get("provider") or self.provider
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(delta["content"])
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if reasoning:
                self.reasoning.append(reasoning)
            for call in delta.get("tool_calls") or []:
                self._merge_tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def _merge_tool_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index", len(self.tool_calls))
        call = self.tool_calls.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    @property
    def cost(self) -> Decimal | None:
        raw = (self.usage or {}).get("cost")
        try:
            return Decimal(str(raw)) if raw is not None else None
        except InvalidOperation:
            return None


def _checkpoint(message: Message, acc: Accumulator) -> None:
    Message.objects.filter(pk=message.pk).update(
        content=acc.text, reasoning=acc.reasoning_text, updated_at=timezone.now()
    )


def _finalise(
    message: Message, acc: Accumulator, status: str, error: str = "", started: float = 0.0
) -> Message:
    message.status = status
    message.content = acc.text
    message.reasoning = acc.reasoning_text
    message.html = render_markdown(message.content)
    message.error = error
    message.finish_reason = acc.finish_reason
    message.generation_id = acc.generation_id
    message.model = acc.model or message.model
    message.usage = acc.usage
    message.cost = acc.cost
    message.routing = {"provider": acc.provider} if acc.provider else None
    message.tool_calls = list(acc.tool_calls.values()) or None
    if started:
        message.duration_ms = int((time.monotonic() - started) * 1000)
    message.save()
    Conversation.objects.filter(pk=message.conversation_id).update(updated_at=timezone.now())
    return message


async def run_turn(prepared: PreparedTurn, turn: Turn) -> AsyncIterator[Event]:
    """The body of one turn, yielding its events (see contract/api.md)."""
    assistant = prepared.assistant
    turn.assistant_message_id = assistant.pk
    acc = Accumulator()
    started = time.monotonic()
    last_checkpoint = started
    if prepared.created:
        yield Event("session", {"session_id": prepared.conversation.session_id})
    prompt = await _db(build_prompt, prepared.conversation, assistant)
    body = {
        **prepared.params,
        "model": prepared.model,
        "messages": prompt,
        "stream": True,
        "usage": {"include": True},
    }
    try:
        async for raw, chunk in openrouter.stream_chat(body):
            acc.add(chunk)
            turn.content, turn.reasoning = acc.text, acc.reasoning_text
            yield Event("message", raw)
            now = time.monotonic()
            if now - last_checkpoint >= settings.CHAT_CHECKPOINT_SECONDS:
                last_checkpoint = now
                await _db(_checkpoint, assistant, acc)
    except openrouter.UpstreamError as exc:
        log.warning("turn %s failed: %s", assistant.pk, exc.message)
        yield Event("message", error_chunk(exc.message))
        stored = await _db(_finalise, assistant, acc, Message.Status.ERROR, exc.message, started)
        yield Event("metadata", message_metadata(stored))
        return
    except asyncio.CancelledError:
        # Save what arrived even though the task is being cancelled.
        await asyncio.shield(_db(_finalise, assistant, acc, Message.Status.CANCELLED, "", started))
        raise
    stored = await _db(_finalise, assistant, acc, Message.Status.COMPLETE, "", started)
    yield Event("metadata", message_metadata(stored))
