"""The MCP side of a chat turn: which tools to offer (with optional planning) and running one
round of tool calls (approval, per-call timeout, concurrency, result caps, storage).

The orchestrator (chat/orchestrator.py) drives the model rounds and relays the events produced
here. Event shapes are in contract/api.md (`tool`, `notice`).
"""

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model

from attachments.services import (
    ATTACHMENT_PART,
    UploadRefused,
    attach_generated_image,
    link_to_message,
)
from chat import openrouter
from chat.models import Message
from chat.rendering import render_markdown
from chat.turns import Event
from integrations import services
from integrations.registry import (
    ServerConfig,
    ServerUnavailable,
    ToolEntry,
    ToolOutcome,
    get_registry,
)

log = logging.getLogger(__name__)

# Images a tool returns are kept as attachments (checked like uploads, which also caps them at
# ATTACHMENTS_MAX_SIZE_BYTES); these limits apply before the base64 is even decoded.
MAX_IMAGES = 4
MAX_IMAGE_CHARS = 7_000_000  # base64 characters, about 5 MB of image
DENIED = "The user denied this tool call; do not retry it unless asked."
PLANNER_PROMPT = (
    "You choose which tools an assistant may use to answer the user's latest message. "
    'Reply with JSON only: {"tools": [names]} listing the tools that could help (an empty '
    "list when none). Only use names from the catalogue."
)


async def _db(func, *args, **kwargs):
    return await sync_to_async(func, thread_sensitive=True)(*args, **kwargs)


# Which tools ---------------------------------------------------------------------------------


async def tools_for_turn(
    user_id: int,
    user_text: str,
    configs: list[ServerConfig] | None = None,
    planning: bool | None = None,
) -> tuple[list[ToolEntry], list[Event]]:
    """The tools to offer this turn, and notices to show (planner result or fallback).

    `configs` and `planning`, when the caller read them already (with the turn), save a trip
    to the database each."""
    try:
        entries = await get_registry().catalogue(configs)
    except Exception:  # tools are an extra: a registry failure must not fail the chat turn
        log.exception("could not build the MCP tool catalogue")
        return [], []
    if not entries:
        return [], []
    if planning is None:
        try:
            planning = await _db(_planning_enabled, user_id)
        except Exception:  # a broken setting must not cost the turn its tools
            log.exception("could not read the planning setting")
            planning = False
    if not planning:
        return entries, []
    return await plan_tools(user_text, entries)


def _planning_enabled(user_id: int) -> bool:
    from presets.services import planning_enabled_for

    return planning_enabled_for(get_user_model().objects.get(pk=user_id))


def catalogue_lines(entries: list[ToolEntry]) -> str:
    """A compact catalogue: one line per tool, the first sentence of its description."""
    lines = []
    for entry in entries:
        summary = " ".join(entry.tool.description.split())[:120]
        lines.append(f"- {entry.exposed}: {summary}")
    return "\n".join(lines)


def planner_body(user_text: str, entries: list[ToolEntry]) -> dict[str, Any]:
    return {
        "model": settings.PLANNER_MODEL,
        "messages": [
            {"role": "system", "content": PLANNER_PROMPT},
            {
                "role": "user",
                "content": f"Tool catalogue:\n{catalogue_lines(entries)}\n\n"
                f"User message:\n{user_text[:4000]}",
            },
        ],
        "temperature": 0,
        "usage": {"include": True},
    }


def parse_plan(content: str, names: set[str]) -> list[str]:
    """The tool names a planner reply picks; ValueError when it is not what was asked for."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    data = json.loads(text)
    picked = data.get("tools") if isinstance(data, dict) else data
    if not isinstance(picked, list) or not all(isinstance(n, str) for n in picked):
        raise ValueError("the planner did not return a list of tool names")
    unknown = [n for n in picked if n not in names]
    if unknown:
        raise ValueError(f"the planner named unknown tools: {', '.join(unknown[:5])}")
    return list(dict.fromkeys(picked))


async def plan_tools(
    user_text: str, entries: list[ToolEntry]
) -> tuple[list[ToolEntry], list[Event]]:
    total = len(entries)
    cost: Decimal | None = None
    try:
        async with asyncio.timeout(settings.PLANNER_TIMEOUT):
            reply = await openrouter.complete(planner_body(user_text, entries))
        raw_cost = (reply.get("usage") or {}).get("cost")
        try:
            cost = Decimal(str(raw_cost)) if raw_cost is not None else None
        except InvalidOperation:
            cost = None
        content = reply["choices"][0]["message"]["content"] or ""
        picked = parse_plan(content, {e.exposed for e in entries})
    except TimeoutError:
        return entries, [_fallback(f"timed out after {settings.PLANNER_TIMEOUT:g} s", total)]
    except openrouter.UpstreamError as exc:
        return entries, [_fallback(exc.message, total)]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return entries, [_fallback(f"invalid planner output ({exc})", total)]
    chosen = [e for e in entries if e.exposed in set(picked)]
    notice = {
        "type": "planner",
        "message": f"planner picked {len(chosen)} of {total} tools",
        "picked": len(chosen),
        "total": total,
        "tools": [e.exposed for e in chosen],
        "model": settings.PLANNER_MODEL,
        "cost": float(cost) if cost is not None else None,
        "fallback": False,
    }
    return chosen, [Event("notice", notice)]


def _fallback(reason: str, total: int) -> Event:
    return Event(
        "notice",
        {
            "type": "planner",
            "message": f"Planner failed ({reason}); offering all {total} tools.",
            "picked": total,
            "total": total,
            "model": settings.PLANNER_MODEL,
            "cost": None,
            "fallback": True,
        },
    )


def rejects_tools(exc: openrouter.UpstreamError) -> bool:
    """A 4xx from the model API that is about tools (the model does not support them)."""
    status = getattr(exc, "upstream_status", None)
    return status is not None and 400 <= status < 500 and "tool" in exc.message.lower()


# One round of calls --------------------------------------------------------------------------


class PendingRound:
    """The assistant message of a round that asked for tools, not yet saved: whoever stores the
    first result (or waits for a person) saves it in the same trip to the database."""

    def __init__(
        self,
        message: Message,
        save: Callable[[Message], Message],
        calls: int,
        prepare_next: Callable[[Message], Any] | None = None,
    ) -> None:
        self.message = message
        self.save = save
        self._taken = False
        # The last result to be stored also prepares the next round (same trip to the database).
        self.remaining = calls
        self.prepare_next = prepare_next
        self.next: Any = None
        # With defer_last, the last result's trip to the database is not awaited by the calls:
        # it is left in `deferred`, so the next model request can go out while it runs.
        self.defer_last = False
        self.deferred: DeferredStore | None = None

    def take(self) -> Message | None:
        if self._taken:
            return None
        self._taken = True
        return self.message


@dataclass
class CallResult:
    call_id: str
    name: str
    ok: bool
    denied: bool = False
    message: Message | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # What the model reads (the stored message's content, also while it is being stored).
    content: str = ""


@dataclass
class DeferredStore:
    """The last result of a round, being stored: `task` gives its message, `event` the `tool`
    event that reports the call finished (sent once it is stored)."""

    task: "asyncio.Future[Message]"
    result: CallResult
    event: Callable[[Message], Event]


def cap(text: str, limit: int | None = None) -> str:
    limit = limit or settings.MCP_RESULT_MAX_CHARS
    if len(text) <= limit:
        return text
    return (
        f"{text[:limit]}\n\n[Result truncated: {len(text)} characters, showing the first {limit}.]"
    )


def _store_result(
    pending: PendingRound,
    round_message: Message | None,
    call_id: str,
    name: str,
    server_id: str,
    outcome: ToolOutcome,
    duration_ms: int,
    last: bool = False,
) -> Message:
    if round_message is not None:
        pending.save(round_message)
    assistant = pending.message
    text = cap(outcome.text)
    parts: list[dict[str, Any]] = []
    if outcome.images:
        parts, notes = _store_images(assistant, name, outcome.images)
        if notes:
            text = "\n\n".join([text, *notes]) if text else "\n".join(notes)
    stored = Message.objects.create(
        conversation_id=assistant.conversation_id,
        parent=assistant,
        role=Message.Role.TOOL,
        status=Message.Status.COMPLETE if outcome.ok else Message.Status.ERROR,
        content=text,
        html=render_markdown(text),
        content_parts=parts or None,
        error="" if outcome.ok else text[:500],
        tool_call_id=call_id,
        tool_name=name,
        routing={"mcp_server": server_id} if server_id else None,
        duration_ms=duration_ms,
    )
    if parts:
        link_to_message(stored)  # deleting the result (or what it answers) deletes its images
    if last and pending.prepare_next is not None:
        pending.next = pending.prepare_next(stored)
    return stored


def _store_images(
    assistant: Message, tool_name: str, images: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep a tool's images as attachments of the conversation, checked like uploads, for the
    person (the model gets the result's text only). Returns the `attachment` parts for the
    tool message and a note for each image left out (the model and the person read those)."""
    parts: list[dict[str, Any]] = []
    notes: list[str] = []
    conversation = assistant.conversation
    for number, (_declared, data) in enumerate(images[:MAX_IMAGES], start=1):
        try:
            if len(data) > MAX_IMAGE_CHARS:
                raise UploadRefused(413, f"too large ({len(data)} base64 characters)")
            try:
                raw = base64.b64decode("".join(data.split()), validate=True)
            except (binascii.Error, ValueError):
                raise UploadRefused(400, "not valid base64") from None
            attachment = attach_generated_image(conversation, raw, f"{tool_name}-{number}")
        except UploadRefused as exc:
            reason = exc.detail.rstrip(".")
            notes.append(f"[Image {number} was not kept: {reason[:1].lower()}{reason[1:]}.]")
            continue
        except Exception:  # a storage failure costs the image, not the tool result
            log.exception("could not store image %d of tool %s", number, tool_name)
            notes.append(f"[Image {number} was not kept: it could not be stored.]")
            continue
        parts.append({"type": ATTACHMENT_PART, "attachment_id": attachment.public_id})
    if len(images) > MAX_IMAGES:
        notes.append(
            f"[{len(images) - MAX_IMAGES} more image(s) were not kept: at most {MAX_IMAGES} "
            "per result.]"
        )
    return parts, notes


async def run_calls(
    calls: list[dict[str, Any]],
    entries: list[ToolEntry],
    pending: PendingRound,
    user_id: int,
    results: list[CallResult],
) -> AsyncIterator[Event]:
    """Run one round's calls concurrently, yielding `tool` events; fills `results` in order."""
    by_name = {e.exposed: e for e in entries}
    queue: asyncio.Queue[Event] = asyncio.Queue()
    slots: list[CallResult | None] = [None] * len(calls)

    async def one(index: int, call: dict[str, Any]) -> None:
        slots[index] = await _run_one(call, by_name, pending, user_id, queue)

    tasks = [asyncio.create_task(one(i, c)) for i, c in enumerate(calls)]
    waiter: asyncio.Future[Any] = asyncio.ensure_future(
        asyncio.gather(*tasks, return_exceptions=True)
    )
    try:
        while True:
            getter: asyncio.Future[Any] = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait([getter, waiter], return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            while not queue.empty():
                yield queue.get_nowait()
            break
    finally:
        for task in tasks:
            task.cancel()
        waiter.cancel()
        # A round cut short (Stop) leaves nothing to report: its outcome is seen here, not
        # logged by asyncio as "exception was never retrieved".
        waiter.add_done_callback(_seen)
    for index, slot in enumerate(slots):
        if slot is None:  # the call crashed: report it as a failure the model can read
            call = calls[index]
            slot = CallResult(call.get("id", ""), call["function"]["name"], ok=False)
            task = tasks[index]
            if task.done() and not task.cancelled() and task.exception():
                log.error("tool call crashed", exc_info=task.exception())
        results.append(slot)


def _seen(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()


async def _run_one(
    call: dict[str, Any],
    by_name: dict[str, ToolEntry],
    pending: PendingRound,
    user_id: int,
    queue: asyncio.Queue[Event],
) -> CallResult:
    call_id = call.get("id") or ""
    name = call["function"]["name"]
    entry = by_name.get(name)
    server_id = entry.config.server_id if entry else ""
    started = time.monotonic()

    async def finish(outcome: ToolOutcome, denied: bool = False) -> CallResult:
        duration = int((time.monotonic() - started) * 1000)
        pending.remaining -= 1
        last = pending.remaining == 0
        store = _db(
            _store_result,
            pending,
            pending.take(),
            call_id,
            name,
            server_id,
            outcome,
            duration,
            last,
        )

        def finished(stored: Message) -> Event:
            return Event(
                "tool",
                {
                    "status": "finished" if outcome.ok else "error",
                    "name": name,
                    "call_id": call_id,
                    "server": server_id or None,
                    "result": stored.content,
                    "message_id": stored.pk,
                    "duration_ms": duration,
                    "images": len(stored.content_parts or []),
                    **({"denied": True} if denied else {}),
                },
            )

        if last and pending.defer_last and not outcome.images:
            # Its text is all the model needs (images would add notes once stored).
            result = CallResult(call_id, name, outcome.ok, denied, content=cap(outcome.text))
            pending.deferred = DeferredStore(asyncio.ensure_future(store), result, finished)
            return result
        stored = await store
        queue.put_nowait(finished(stored))
        return CallResult(call_id, name, outcome.ok, denied, stored, content=stored.content)

    if entry is None:
        queue.put_nowait(Event("tool", _started(name, call_id, "")))
        return await finish(ToolOutcome(False, f"Unknown or disabled tool: {name}"))
    raw = call["function"].get("arguments") or "{}"
    try:
        arguments = json.loads(raw)
        if not isinstance(arguments, dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as exc:
        queue.put_nowait(Event("tool", _started(name, call_id, server_id)))
        return await finish(ToolOutcome(False, f"Invalid arguments for {name}: {exc}"))

    if services.needs_approval(entry.config.approval_policy, entry.tool.read_only):
        unsaved = pending.take()
        if unsaved is not None:  # a person may take minutes: store the round first
            await _db(pending.save, unsaved)
        future = services.register_approval(user_id, call_id)
        queue.put_nowait(
            Event(
                "tool",
                {
                    "status": "approval_required",
                    "name": name,
                    "call_id": call_id,
                    "server": server_id,
                    "arguments": arguments,
                    "description": entry.tool.description[:500],
                    "timeout_seconds": settings.MCP_APPROVAL_TIMEOUT,
                },
            )
        )
        try:
            async with asyncio.timeout(settings.MCP_APPROVAL_TIMEOUT):
                approved = await future
        except TimeoutError:
            approved = False
        finally:
            services.forget_approval(call_id)
        if not approved:
            queue.put_nowait(Event("tool", _started(name, call_id, server_id)))
            return await finish(ToolOutcome(False, DENIED), denied=True)
        await _db(services.record_approval, server_id, entry.tool.name, entry.tool.fingerprint)

    queue.put_nowait(Event("tool", _started(name, call_id, server_id)))
    started = time.monotonic()
    try:
        outcome = await get_registry().call(entry, arguments)
    except ServerUnavailable as exc:
        outcome = ToolOutcome(False, f"The tool's server is unavailable: {exc}")
    return await finish(outcome)


def _started(name: str, call_id: str, server_id: str) -> dict[str, Any]:
    return {"status": "started", "name": name, "call_id": call_id, "server": server_id or None}
