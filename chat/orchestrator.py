"""The orchestrator: runs one chat turn against the model and relays its events.

A turn is a loop of model rounds when the model uses MCP tools (see run_turn).

It builds the request, streams it, relays every chunk, checkpoints the partial answer every
CHAT_CHECKPOINT_SECONDS (never a write per token) and finalises the assistant message with its
status, usage, cost, generation id and reasoning. Faults become an in-band error and an `error`
message; cancellation (Stop, a client that went away) stores what arrived as `cancelled`.
"""

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from chat import openrouter
from chat.models import Conversation, Message
from chat.rendering import render_markdown
from chat.services import PlannedTurn, PreparedTurn, build_prompt, message_metadata
from chat.turns import Event, Turn
from integrations import toolloop

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


def _fill(
    message: Message, acc: Accumulator, status: str, error: str = "", started: float = 0.0
) -> Message:
    """Put the finished round into `message`, in memory (no database)."""
    message.status = status
    message.content = acc.text
    message.reasoning = acc.reasoning_text
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
    return message


# What _fill sets, plus the rendered HTML: the columns a finished round writes.
_ROUND_FIELDS = [
    "status",
    "content",
    "reasoning",
    "error",
    "finish_reason",
    "generation_id",
    "model",
    "usage",
    "cost",
    "routing",
    "tool_calls",
    "duration_ms",
    "html",
    "updated_at",
]


def _save(message: Message) -> Message:
    message.html = render_markdown(message.content)
    message.save(update_fields=_ROUND_FIELDS)
    if not message.tool_calls:  # a round that asks for tools is not the end of the turn
        Conversation.objects.filter(pk=message.conversation_id).update(updated_at=timezone.now())
    return message


def _finalise(
    message: Message, acc: Accumulator, status: str, error: str = "", started: float = 0.0
) -> Message:
    return _save(_fill(message, acc, status, error, started))


def _next_round(prepared: PreparedTurn, parent: Message) -> tuple[Message, list[dict[str, Any]]]:
    """The next round's `streaming` message and its prompt, in one trip to the database."""
    message = _new_round_message(prepared, parent)
    return message, build_prompt(prepared.conversation, message)


def _new_round_message(prepared: PreparedTurn, parent: Message) -> Message:
    return Message.objects.create(
        conversation=prepared.conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=prepared.model,
    )


def _pause_message(
    prepared: PreparedTurn,
    parent: Message,
    text: str,
    prepared_next: Message | None = None,
) -> Message:
    """The stored message that says the turn paused (the prepared next round becomes it)."""
    message = _new_round_message(prepared, parent) if prepared_next is None else prepared_next
    message.status = Message.Status.COMPLETE
    message.content = text
    message.html = render_markdown(text)
    message.finish_reason = "tool_limit"
    message.save(update_fields=["status", "content", "html", "finish_reason", "updated_at"])
    return message


def _cancel_unstarted(message: Message) -> None:
    Message.objects.filter(pk=message.pk).update(
        status=Message.Status.CANCELLED, updated_at=timezone.now()
    )


def _latest_user_text(prepared: PreparedTurn) -> str:
    message = prepared.user_message
    return message.content if message is not None else ""


def _next_prompt(
    sent: list[dict[str, Any]],
    round_message: Message,
    calls: list[dict[str, Any]],
    results: list[toolloop.CallResult],
) -> list[dict[str, Any]]:
    """This round's prompt plus the round and its results: what build_prompt would read back
    once they are stored, without a trip to the database."""
    return [
        *sent,
        {"role": "assistant", "content": round_message.content, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in results),
    ]


async def _abandon_next_round(pending: toolloop.PendingRound) -> None:
    """The turn stops after its tool calls: let a result still being stored finish (its store
    may be what prepares the next round), then mark the next round, never run, cancelled."""
    if pending.deferred is not None:
        try:
            await asyncio.shield(pending.deferred.task)
        except Exception:  # the turn is ending with another exception: log this one
            log.exception("storing the last tool result failed")
    if pending.next is not None:
        await asyncio.shield(_db(_cancel_unstarted, pending.next))


class ReadAhead:
    """Reads an upstream stream from now on, before its consumer is ready for it (a request
    sent while the database stores something): each chunk is read as it arrives, and kept.

    Asking for the first chunk only is not enough: an upstream that drops the connection right
    after a few chunks would take the unread ones with it (aiohttp raises the connection's
    error before it returns what it had buffered), and the partial answer would be lost.
    `answer()` then yields the chunks read so far and goes on with the stream itself."""

    def __init__(self, stream: AsyncGenerator[tuple[str, dict[str, Any]]]) -> None:
        self.stream = stream
        self._read: list[tuple[str, dict[str, Any]]] = []
        self._next: asyncio.Future[Any] | None = None
        self._taken = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._read_ahead())

    async def _read_ahead(self) -> None:
        while True:
            self._next = asyncio.ensure_future(anext(self.stream))
            await asyncio.wait({self._next, self._taken}, return_when=asyncio.FIRST_COMPLETED)
            if self._taken.done():
                return  # the consumer awaits the chunk in flight itself
            try:
                self._read.append(self._next.result())
            except BaseException:  # the end, or the error: the consumer meets it in order
                return
            self._next = None

    async def answer(self) -> AsyncGenerator[tuple[str, dict[str, Any]]]:
        """The chunks read ahead, then the rest of the stream (closed at the end)."""
        self._taken.set_result(None)
        await self._task
        async with contextlib.aclosing(self.stream):
            for item in self._read:
                yield item
            if self._next is not None:
                try:
                    yield await self._next
                except StopAsyncIteration:
                    return
            async for item in self.stream:
                yield item

    async def abandon(self) -> None:
        """Nobody will read the answer: stop reading and close the request."""
        self._task.cancel()
        if self._next is not None:
            self._next.cancel()
        for pending in (self._task, self._next):
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await pending
        await self.stream.aclose()


def request_body(
    params: dict[str, Any],
    model: str,
    prompt: list[dict[str, Any]],
    entries: list[toolloop.ToolEntry],
) -> dict[str, Any]:
    """A streamed chat completion request: the turn's parameters, its prompt and its tools."""
    body = {
        **params,
        "model": model,
        "messages": prompt,
        "stream": True,
        "usage": {"include": True},
    }
    if entries:
        body["tools"] = [entry.openai_schema() for entry in entries]
    else:
        body.pop("tools", None)
        body.pop("tool_choice", None)
    return body


@dataclass
class HeadStart:
    """A turn's first request, sent before the turn was stored (planned turns, chat.api): the
    tools it offers, their notices, and its answer, read as it arrives."""

    entries: list[toolloop.ToolEntry]
    notices: list[Event]
    reading: ReadAhead

    async def abandon(self) -> None:
        """The turn will not run: close its request."""
        await self.reading.abandon()


async def head_start(user_id: int, planned: PlannedTurn) -> HeadStart:
    """Send a planned turn's first request now (run_turn reads its answer once it is stored)."""
    entries, notices = await toolloop.tools_for_turn(
        user_id, planned.user_text, planned.tool_configs, planned.planning
    )
    stream = openrouter.stream_chat(
        request_body(planned.params, planned.model, planned.prompt, entries)
    )
    return HeadStart(entries, notices, ReadAhead(stream))


def _keep_final(turn: Turn, prepared: PreparedTurn, answer: Message, rounds: int) -> None:
    """A turn of one question and one answer is all in memory at its end: keep it for the
    pages' last frame (a turn with tool rounds is read back instead)."""
    question = prepared.user_message
    if rounds == 1 and question is not None and answer.parent_id == question.pk:
        turn.final_messages = [question, answer]


async def run_turn(
    prepared: PreparedTurn, turn: Turn, head: HeadStart | None = None
) -> AsyncIterator[Event]:
    """The body of one turn, yielding its events (see contract/api.md).

    A turn is one or more model rounds: while the model asks for tools, the calls run
    (toolloop.run_calls), their results are stored as `tool` messages answering the assistant
    message that asked, and the model is called again, up to MCP_MAX_ROUNDS rounds and
    MCP_MAX_CONSECUTIVE_FAILURES failed calls in a row, after which a stored message says so.

    `head`: the first round's request, already sent (and its tools chosen) while the turn was
    being stored.
    """
    turn.started = True
    current = prepared.assistant
    turn.assistant_message_id = current.pk
    if prepared.created:
        yield Event("session", {"session_id": prepared.conversation.session_id})
    # Notices prepared with the turn (attachments: images a model cannot take).
    for notice in getattr(prepared, "notices", ()):
        yield Event("notice", notice)
    user_id = prepared.conversation.user_id
    if head is not None:
        entries, notices = head.entries, head.notices
    else:
        entries, notices = await toolloop.tools_for_turn(
            user_id, _latest_user_text(prepared), prepared.tool_configs, prepared.planning
        )
    for event in notices:
        yield event
    offer_tools = bool(entries)
    retried_without_tools = False
    rounds = 0
    failures = 0
    prompt = prepared.prompt
    # The previous round, its last tool result still being stored (see below).
    storing: toolloop.PendingRound | None = None
    checkpoint_every = settings.CHAT_CHECKPOINT_SECONDS  # read once: a settings read per token
    while True:
        rounds += 1
        acc = Accumulator()
        turn.content_parts, turn.reasoning_parts = acc.content, acc.reasoning
        started = time.monotonic()
        last_checkpoint = started
        if prompt is None:
            prompt = await _db(build_prompt, prepared.conversation, current)
        sent = prompt
        reading: ReadAhead | None = None
        if head is not None:
            reading, head = head.reading, None
        else:
            stream = openrouter.stream_chat(
                request_body(
                    prepared.params, prepared.model, prompt, entries if offer_tools else []
                )
            )
        if storing is not None and storing.deferred is not None:
            # The request goes out now; the answer is read once the result is stored and the
            # next round's message exists.
            previous, waiting = storing, storing.deferred
            storing = None
            reading = ReadAhead(stream)
            try:
                stored_result = await asyncio.shield(waiting.task)
            except BaseException:
                await reading.abandon()
                await _abandon_next_round(previous)
                raise
            yield waiting.event(stored_result)
            current = previous.next
            turn.assistant_message_id = current.pk
        try:
            # The stream itself, unless it was read ahead.
            answer = stream if reading is None else reading.answer()
            async with contextlib.aclosing(answer):  # closed here, not by the collector
                async for raw, chunk in answer:
                    acc.add(chunk)
                    yield Event("message", raw)
                    now = time.monotonic()
                    if now - last_checkpoint >= checkpoint_every:
                        last_checkpoint = now
                        await _db(_checkpoint, current, acc)
        except openrouter.UpstreamError as exc:
            if (
                offer_tools
                and not retried_without_tools
                and not acc.text
                and toolloop.rejects_tools(exc)
            ):
                # Once, never in a loop: the same round again without tools.
                retried_without_tools, offer_tools = True, False
                rounds -= 1
                yield Event(
                    "notice",
                    {
                        "type": "tools_disabled",
                        "message": f"{prepared.model} does not accept tools; "
                        "answering without them.",
                        "detail": exc.message,
                    },
                )
                continue
            log.warning("turn %s failed: %s", current.pk, exc.message)
            yield Event("message", error_chunk(exc.message))
            stored = await _db(_finalise, current, acc, Message.Status.ERROR, exc.message, started)
            _keep_final(turn, prepared, stored, rounds)
            yield Event("metadata", message_metadata(stored))
            return
        except asyncio.CancelledError:
            # Save what arrived even though the task is being cancelled.
            await asyncio.shield(
                _db(_finalise, current, acc, Message.Status.CANCELLED, "", started)
            )
            raise
        if not offer_tools:
            acc.tool_calls.clear()  # a model offered no tools cannot call one
        calls = [c for c in acc.tool_calls.values() if c["function"]["name"]]
        for index, call in enumerate(calls):
            # Results are matched to calls by id (and approvals answered by it): never empty.
            call["id"] = call["id"] or f"call_{current.pk}_{index}"
        acc.tool_calls = dict(enumerate(calls))
        if not calls:
            stored = await _db(_finalise, current, acc, Message.Status.COMPLETE, "", started)
            _keep_final(turn, prepared, stored, rounds)
            yield Event("metadata", message_metadata(stored))
            return

        # The round is stored together with the first tool result (one trip to the database,
        # none while the calls run); its `metadata` event goes out first, from memory.
        stored = _fill(current, acc, Message.Status.COMPLETE, "", started)
        yield Event("metadata", message_metadata(stored))
        pending = toolloop.PendingRound(
            stored, _save, len(calls), functools.partial(_new_round_message, prepared)
        )
        pending.defer_last = True
        results: list[toolloop.CallResult] = []
        try:
            async for event in toolloop.run_calls(calls, entries, pending, user_id, results):
                yield event
        except asyncio.CancelledError:
            await _abandon_next_round(pending)
            raise
        finally:
            unsaved = pending.take()
            if unsaved is not None:  # no call got as far as storing a result (e.g. Stop)
                await asyncio.shield(_db(_save, unsaved))
        for result in results:
            if result.ok or result.denied:
                failures = 0 if result.ok else failures
            else:
                failures += 1
        last = next((r.message for r in reversed(results) if r.message is not None), stored)
        limit = None
        if failures >= settings.MCP_MAX_CONSECUTIVE_FAILURES:
            limit = (
                "tool_error_limit",
                f"Paused: {failures} tool calls in a row failed. "
                "Send a message to continue or try something else.",
            )
        elif rounds >= settings.MCP_MAX_ROUNDS:
            limit = (
                "hop_limit",
                f"Paused after {rounds} model rounds with tools. Send a message to continue.",
            )
        deferred = pending.deferred
        if deferred is not None:
            if limit is None and all(
                r.message is not None or r is deferred.result for r in results
            ):
                # Every result's text is known: the next request goes out while the last one
                # is stored (the top of the loop waits for it before reading the answer).
                storing = pending
                prompt = _next_prompt(sent, stored, calls, results)
                continue
            try:
                deferred.result.message = await asyncio.shield(deferred.task)
            except asyncio.CancelledError:
                await _abandon_next_round(pending)
                raise
            yield deferred.event(deferred.result.message)
            last = deferred.result.message
        prepared_next = pending.next
        if limit is not None:
            status, text = limit
            pause = await _db(_pause_message, prepared, last, text, prepared_next)
            turn.assistant_message_id = pause.pk
            yield Event("tool", {"status": status, "message": text, "message_id": pause.pk})
            yield Event("metadata", message_metadata(pause))
            return
        if prepared_next is not None and all(r.message is not None for r in results):
            # Every call has its stored result: the next prompt is this one plus the round and
            # its results (what build_prompt would read back), with no trip to the database.
            current = prepared_next
            prompt = _next_prompt(sent, stored, calls, results)
        else:
            current, prompt = await _db(_next_round, prepared, last)
        turn.assistant_message_id = current.pk
        turn.content_parts, turn.reasoning_parts = [], []
