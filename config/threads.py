"""Reused threads for synchronous code (the ORM) under ASGI.

Django runs a request's synchronous code (ORM calls, sync views and hooks) in a thread of the
request's own: asgiref's `ThreadSensitiveContext` makes a new single-thread executor per request
and, on exit, starts another thread to join it. So every request started two threads, and, as a
database connection belongs to its thread, opened a new database connection (a SQLite connection
costs ~0.6 ms of CPU to open: Django registers its SQL functions on each one).

Here a request, and a running turn, borrows a single-thread executor from a pool and gives it
back when done (asgiref's `ThreadSensitiveContext(executor=...)`), so threads and their
connections are reused, as a WSGI server reuses its threads. One request or turn at a time owns
an executor, so its synchronous calls still run one after another in one thread, as before.
Connection housekeeping stays Django's: `close_old_connections` (CONN_MAX_AGE,
CONN_HEALTH_CHECKS, broken connections) runs in the borrowed thread on request_started and
request_finished, and for a turn when it gives its executor back.
"""

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections, connections


class ExecutorPool:
    """Single-thread executors, lent one at a time, the last returned first. Up to `max_idle`
    are kept for reuse, and one idle for `idle_seconds` is stopped (closing its thread's
    database connection): the pool shrinks back to what the last minute needed, so a server
    database does not keep a connection per thread of a past burst."""

    def __init__(self, max_idle: int = 32, idle_seconds: float = 60.0) -> None:
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._idle: list[tuple[ThreadPoolExecutor, float]] = []  # (executor, returned at)
        self._lock = threading.Lock()
        self.created = 0

    def take(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()[0]
            self.created += 1
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync")

    def give(self, executor: ThreadPoolExecutor, tidy: bool = False) -> None:
        """Return an executor. `tidy` queues Django's connection housekeeping in its thread
        (what request_finished does for a request), ahead of the next borrower's work."""
        now = time.monotonic()
        with self._lock:
            # The oldest idle executors are at the bottom of the stack.
            expired = 0
            while expired < len(self._idle) and now - self._idle[expired][1] > self.idle_seconds:
                expired += 1
            stale = [e for e, _ in self._idle[:expired]]
            del self._idle[:expired]
            keep = len(self._idle) < self.max_idle
            if keep:
                if tidy:
                    executor.submit(close_old_connections)
                self._idle.append((executor, now))
        for surplus in stale if keep else [*stale, executor]:
            _stop(surplus)

    @contextlib.asynccontextmanager
    async def lend(self, tidy: bool = False) -> AsyncIterator[ThreadPoolExecutor]:
        """Run the block's thread-sensitive calls (`sync_to_async`) in a borrowed thread."""
        executor = self.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                yield executor
        finally:
            self.give(executor, tidy=tidy)

    def close(self) -> None:
        """Close the idle threads' database connections and stop the threads (tests, exit)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for executor, _ in idle:
            _stop(executor, wait=True)


def _stop(executor: ThreadPoolExecutor, wait: bool = False) -> None:
    executor.submit(connections.close_all)
    executor.shutdown(wait=wait)


pool = ExecutorPool()


def detached_task[T](coro: Coroutine[Any, Any, T], name: str) -> "asyncio.Task[T]":
    """Start a task that outlives whatever started it (a connection kept for the process).

    A task inherits its creator's context, and with it the request's or turn's borrowed
    thread: once that block ends, the task's synchronous calls would have nowhere to run
    (asgiref raises). A detached task starts from an empty context, so its calls run in
    asgiref's process-wide thread, as any code outside a request does."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())


class PooledASGIHandler(ASGIHandler):
    """Django's ASGI handler, running each request's synchronous code in a pooled thread."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        async with pool.lend():
            await self.handle(scope, receive, send)
