"""Chat routes of the JSON + SSE API (contract/api.md)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, StreamingHttpResponse
from ninja import Router, Schema, Status
from pydantic import ConfigDict, Field

from chat import openrouter, orchestrator, services
from chat.models import Message
from chat.turns import END, Event, Turn
from config.threads import detached_task

router = Router(tags=["chat"])

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DONE = b"event: message\ndata: [DONE]\n\n"
_SSE_DOC = {
    "responses": {
        200: {
            "description": "Server-sent events: session, message, metadata, tool, notice, "
            "then `message` `[DONE]` (see contract/api.md).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }
}


class ChatMessageIn(Schema):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(None, max_length=200)
    tool_call_id: str | None = Field(None, max_length=200)


class ChatMetadataIn(Schema):
    client_assistant_message_id: str | None = Field(None, max_length=100)
    client_parent_message_id: str | None = Field(None, max_length=100)


class ChatStreamIn(Schema):
    """An OpenAI-style chat request; any other OpenRouter parameter is passed through."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, min_length=1, max_length=200)
    session_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=500)
    metadata: ChatMetadataIn | None = None


class DetailOut(Schema):
    detail: str


def sse_event(event: Event) -> bytes:
    data = event.data if isinstance(event.data, str) else json.dumps(event.data, default=str)
    return f"event: {event.name}\ndata: {data}\n\n".encode()


_PING = Event("ping", None)


class EventStream(StreamingHttpResponse):
    """A server-sent event stream, from an iterator of bytes (each part one or more events).

    Served as the parts come: Django's streaming response would pass each through two more
    generators (one makes sure the part is bytes, one re-yields it), per token."""

    def __init__(self, parts: AsyncIterator[bytes]) -> None:
        super().__init__(parts, content_type="text/event-stream", headers=_SSE_HEADERS)
        self._parts = parts

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._parts


async def relay_turn(turn: Turn, queue: asyncio.Queue[Event]) -> AsyncIterator[bytes]:
    """Relay a turn's events as SSE; a client that goes away cancels the turn.

    A `: ping` comment goes out after SSE_PING_SECONDS without a write. One timer per ping
    interval drives it (it drops a ping marker into the queue), not a timeout per event."""
    loop = asyncio.get_running_loop()
    interval = settings.SSE_PING_SECONDS
    last_write = loop.time()
    timer = loop.call_later(interval, queue.put_nowait, _PING)
    finished = False
    try:
        while not finished:
            event = await queue.get()
            # Send what is already queued in one write rather than one write per chunk.
            batch = []
            while True:
                if event is END:
                    finished = True
                    break
                if event is _PING:
                    idle = loop.time() - last_write
                    if idle >= interval * 0.99:
                        batch.append(b": ping\n\n")
                        idle = 0.0
                    timer = loop.call_later(interval - idle, queue.put_nowait, _PING)
                else:
                    batch.append(sse_event(event))
                if queue.empty():
                    break
                event = queue.get_nowait()
            if batch:
                last_write = loop.time()
                yield b"".join(batch)
    finally:
        timer.cancel()
        turn.unsubscribe(queue)
        if not finished:
            turn.cancel()
    yield _DONE


async def _start_turn(user, turn_input: services.TurnInput) -> Turn:
    """Check, store and start a turn. When its first prompt needs nothing the turn stores (most
    turns: no retry, no attachment), the first request to the model goes out before the turn's
    messages are stored, and the two overlap: the first token does not wait for the writes."""
    head = None
    if services.can_plan(turn_input):
        planned = await sync_to_async(services.plan_turn)(user, turn_input)
        head = await orchestrator.head_start(user.pk, planned)
        store = asyncio.ensure_future(
            sync_to_async(services.store_planned_turn)(user, turn_input, planned)
        )
    else:
        store = asyncio.ensure_future(sync_to_async(services.prepare_turn)(user, turn_input))
    try:
        # Shielded: a client that goes away meanwhile does not interrupt the write.
        prepared = await asyncio.shield(store)
    except BaseException:
        if head is not None:
            await head.abandon()
        if not store.done():
            detached_task(_forget_unstarted(store), name="forget-unstarted-turn")
        raise
    return services.start_turn(prepared, head)


async def _forget_unstarted(store: "asyncio.Future[services.PreparedTurn]") -> None:
    """The request went away while its turn was being stored: once stored, the turn that will
    never run must not stay `streaming` (that would refuse the conversation's next turns)."""
    try:
        prepared = await store
    except Exception:
        return  # nothing was stored
    await sync_to_async(services.mark_unstarted)(prepared)


def _passthrough_params(request) -> dict[str, Any]:
    """OpenRouter parameters of the body (ninja validates declared fields only)."""
    raw = json.loads(request.body)
    return {k: v for k, v in raw.items() if k not in ChatStreamIn.model_fields}


@router.post(
    "/stream",
    response={404: DetailOut, 409: DetailOut, 422: DetailOut, 503: DetailOut},
    openapi_extra=_SSE_DOC,
    summary="Run a chat turn and stream it as server-sent events",
)
async def chat_stream(request, body: ChatStreamIn):
    if not settings.OPENROUTER_API_KEY:
        raise openrouter.NotConfigured()
    if all(m.role == "assistant" for m in body.messages):
        return Status(
            422, {"detail": "messages must contain at least one user, system or tool message"}
        )
    metadata = body.metadata or ChatMetadataIn.model_validate({})
    turn_input = services.TurnInput(
        messages=[m.model_dump(exclude_none=True) for m in body.messages],
        model=body.model,
        params=_passthrough_params(request),
        session_id=body.session_id,
        client_assistant_message_id=metadata.client_assistant_message_id or "",
        client_parent_message_id=metadata.client_parent_message_id or "",
    )
    turn = await _start_turn(request.auth, turn_input)
    # Subscribe before the task first runs, so no event is missed.
    queue = turn.subscribe()
    return EventStream(relay_turn(turn, queue))


async def _test_stream() -> AsyncIterator[bytes]:
    for word in ("Hello ", "from ", "server!"):
        chunk = {"choices": [{"index": 0, "delta": {"content": word}}]}
        yield sse_event(Event("message", chunk))
    yield _DONE


@router.get("/test-stream", openapi_extra=_SSE_DOC, summary="A fixed three-event test stream")
async def test_stream(request):
    return EventStream(_test_stream())


@router.get(
    "/generation/{generation_id}",
    response={200: dict[str, Any], 404: DetailOut, 502: DetailOut, 504: DetailOut},
    summary="OpenRouter's statistics for one of your generations",
)
async def generation(request, generation_id: str):
    owned = (
        await Message.objects.for_user(request.auth).filter(generation_id=generation_id).aexists()
    )
    if not owned:
        raise Http404("Generation not found")
    return await openrouter.get_json("/generation", {"id": generation_id})


@router.delete("/session/{session_id}", response={204: None, 404: DetailOut})
def delete_session(request, session_id: str):
    services.delete_conversation(request.auth, session_id)
    return Status(204, None)


@router.delete("/session/{session_id}/messages/{message_id}", response={204: None, 404: DetailOut})
def delete_message(request, session_id: str, message_id: str):
    services.delete_message(request.auth, session_id, message_id)
    return Status(204, None)
