"""Running turns: a server-side task per conversation, with subscribers.

A turn is not owned by whoever started it. It runs as an asyncio task keyed by conversation;
any number of subscribers (an SSE response, WebSocket consumers) receive its events, and
`cancel_turn` stops it from anywhere in the process, closing the upstream request.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from config.threads import pool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Event:
    """One turn event. `data` is a dict, or a str that is already JSON (relayed chunks)."""

    name: str
    data: Any


END = Event("end", None)


@dataclass
class Turn:
    conversation_id: int
    task: "asyncio.Task[None] | None" = None
    subscribers: set[asyncio.Queue[Event]] = field(default_factory=set)
    assistant_message_id: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # The current round's text so far, as the pieces that arrived (the orchestrator appends to
    # these lists), so a page that arrives mid-turn can show it at once. Joined only when read:
    # joining on every chunk would cost O(n^2) over an answer.
    content_parts: list[str] = field(default_factory=list)
    reasoning_parts: list[str] = field(default_factory=list)
    # The turn's messages as stored when it ended, when the orchestrator holds all of them (a
    # question and its one answer, no tool round): the pages' last frame is drawn from them
    # instead of being read back. None: read the turn from the database.
    final_messages: list[Any] | None = None
    # Set by the turn's body (run_turn) as it starts: a turn stopped before then never ran.
    started: bool = False
    # The task has begun relaying; a Stop before then is kept for it to find (cancelling a
    # task before its first step would skip its clean-up: it would stay registered as running).
    relaying: bool = False
    stop_requested: bool = False

    @property
    def content(self) -> str:
        return "".join(self.content_parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        if self.done.is_set():
            queue.put_nowait(END)
        else:
            self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self.subscribers.discard(queue)

    def publish(self, event: Event) -> None:
        for queue in self.subscribers:
            queue.put_nowait(event)

    def cancel(self) -> None:
        if self.task is None or self.task.done():
            return
        if self.relaying:
            self.task.cancel()
        else:
            self.stop_requested = True


_turns: dict[int, Turn] = {}


def get_turn(conversation_id: int) -> Turn | None:
    return _turns.get(conversation_id)


def is_running(conversation_id: int) -> bool:
    return conversation_id in _turns


class TurnInProgress(Exception):
    pass


def launch(
    conversation_id: int,
    run: Callable[[Turn], AsyncIterator[Event]],
    on_finish: Callable[[Turn], Coroutine[Any, Any, None]] | None = None,
) -> Turn:
    """Start `run(turn)` as a task and relay every event it yields to the subscribers."""
    if conversation_id in _turns:
        raise TurnInProgress(conversation_id)
    turn = Turn(conversation_id=conversation_id)
    _turns[conversation_id] = turn

    async def drive() -> None:
        # Each of the turn's database calls borrows a pooled thread for the call (not the
        # request's thread: a turn outlives its request), so while tokens stream the turn holds
        # no thread and no database connection.
        async with pool.lend_per_call():
            await relay()

    async def relay() -> None:
        turn.relaying = True
        try:
            if not turn.stop_requested:
                async for event in run(turn):
                    turn.publish(event)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("turn for conversation %s crashed", conversation_id)
        finally:
            _turns.pop(conversation_id, None)
            turn.done.set()
            turn.publish(END)
            turn.subscribers.clear()
            if on_finish is not None:
                try:
                    await on_finish(turn)
                except Exception:
                    log.exception("turn finish hook failed")

    turn.task = asyncio.get_running_loop().create_task(drive(), name=f"turn-{conversation_id}")
    return turn


def cancel_turn(conversation_id: int) -> bool:
    turn = _turns.get(conversation_id)
    if turn is None:
        return False
    turn.cancel()
    return True
