"""Reused threads for synchronous code (the ORM) under ASGI.

Django runs a request's synchronous code (ORM calls, sync views and hooks) in a thread of the
request's own: asgiref's `ThreadSensitiveContext` makes a new single-thread executor per request
and, on exit, starts another thread to join it. So every request started two threads, and, as a
database connection belongs to its thread, opened a new database connection (a SQLite connection
costs ~0.6 ms of CPU to open: Django registers its SQL functions on each one).

Here threads come from a pool and go back to it, so they and their connections are reused, as a
WSGI server reuses its threads (asgiref's `ThreadSensitiveContext(executor=...)`):

- a request borrows a single-thread executor while Django makes its response, so its
  synchronous calls still run one after another in one thread; a streamed body (an SSE answer,
  minutes long) goes out after the thread is back in the pool;
- a running turn borrows a thread only while it has database calls to run
  (`LendingExecutor`): between its calls, while tokens stream, it holds no thread and no
  database connection.

So the threads, and database connections, in use at once are the requests being answered and
the calls being run, not the streams open. Holding a thread per open stream and per turn, 50
API streams needed ~100 PostgreSQL connections: more than the server's default limit of 100.

Connection housekeeping stays Django's: `close_old_connections` (CONN_MAX_AGE,
CONN_HEALTH_CHECKS, broken connections) runs in a borrowed thread when it is given back.
"""

import asyncio
import collections
import contextlib
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.cache import close_caches
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import reset_urlconf
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connections, reset_queries


class ExecutorPool:
    """Single-thread executors, lent one at a time, the last returned first. Up to `max_idle`
    are kept for reuse, and one idle for `idle_seconds` is stopped (closing its thread's
    database connection): the pool shrinks back to what the last minute needed, so a server
    database does not keep a connection per thread of a past burst."""

    def __init__(
        self, max_idle: int = 32, idle_seconds: float = 60.0, max_threads: int | None = None
    ) -> None:
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        # At most this many lent at once (None: the DB_THREADS setting); later borrowers wait
        # for one to come back. Threads, and so database connections, never outnumber it.
        self.max_threads = max_threads
        self._idle: list[tuple[ThreadPoolExecutor, float]] = []  # (executor, returned at)
        self._waiting: collections.deque[Callable[[ThreadPoolExecutor], None]] = collections.deque()
        self._lock = threading.Lock()
        self.created = 0
        self.lent = 0  # executors out on loan now

    @property
    def limit(self) -> int:
        return self.max_threads if self.max_threads is not None else int(settings.DB_THREADS)

    def take(self) -> ThreadPoolExecutor:
        """An executor, now (RuntimeError with all `limit` of them lent)."""
        executor = self.take_or_wait(None)
        assert executor is not None
        return executor

    def take_or_wait(
        self, when_free: Callable[[ThreadPoolExecutor], None] | None
    ) -> ThreadPoolExecutor | None:
        """An executor, now; or, with all `limit` of them lent, None, and `when_free` is called
        with one as it comes back (in the thread that gives it back)."""
        with self._lock:
            if self.lent >= self.limit:
                if when_free is None:
                    raise RuntimeError("every pooled thread is lent")
                self._waiting.append(when_free)
                return None
            self.lent += 1
            if self._idle:
                return self._idle.pop()[0]
            self.created += 1
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync")

    async def borrow(self) -> ThreadPoolExecutor:
        """An executor: at once, or the first one given back when all are lent."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[ThreadPoolExecutor] = loop.create_future()

        def hand_over(executor: ThreadPoolExecutor) -> None:
            if ready.done():  # the borrower stopped waiting (cancelled)
                self.give(executor)
            else:
                ready.set_result(executor)

        def when_free(executor: ThreadPoolExecutor) -> None:
            try:
                loop.call_soon_threadsafe(hand_over, executor)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                self.give(executor)

        executor = self.take_or_wait(when_free)
        return executor if executor is not None else await ready

    def give(self, executor: ThreadPoolExecutor, tidy: bool = False) -> None:
        """Return an executor (to the first borrower waiting, if any). `tidy` queues Django's
        connection housekeeping in its thread (what request_finished does for a request), ahead
        of the next borrower's work."""
        now = time.monotonic()
        stop: list[ThreadPoolExecutor] = []
        with self._lock:
            waiter = self._waiting.popleft() if self._waiting else None
            if waiter is None:
                self.lent -= 1
                # The oldest idle executors are at the bottom of the stack.
                expired = 0
                while (
                    expired < len(self._idle) and now - self._idle[expired][1] > self.idle_seconds
                ):
                    expired += 1
                stop = [e for e, _ in self._idle[:expired]]
                del self._idle[:expired]
                if len(self._idle) < self.max_idle:
                    if tidy:
                        executor.submit(close_old_connections)
                    self._idle.append((executor, now))
                else:
                    stop.append(executor)
        if waiter is not None:  # passed on, still lent
            if tidy:
                executor.submit(close_old_connections)
            waiter(executor)
        for surplus in stop:
            _stop(surplus)

    @contextlib.asynccontextmanager
    async def lend(self, tidy: bool = False) -> AsyncIterator[ThreadPoolExecutor]:
        """Run the block's thread-sensitive calls (`sync_to_async`) in a borrowed thread."""
        executor = await self.borrow()
        try:
            async with ThreadSensitiveContext(executor=executor):
                yield executor
        finally:
            self.give(executor, tidy=tidy)

    def lend_per_call(self) -> ThreadSensitiveContext:
        """Run the block's thread-sensitive calls in order, in a thread borrowed only while they
        wait or run (`async with pool.lend_per_call(): ...`; see LendingExecutor)."""
        return ThreadSensitiveContext(executor=LendingExecutor(self))

    def close(self) -> None:
        """Close the idle threads' database connections and stop the threads (tests, exit)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for executor, _ in idle:
            _stop(executor, wait=True)


def _stop(executor: ThreadPoolExecutor, wait: bool = False) -> None:
    executor.submit(connections.close_all)
    executor.shutdown(wait=wait)


class LendingExecutor(Executor):
    """Runs a block's calls one at a time, in the order they come, in a thread borrowed from
    `pool` only while calls are waiting or running: given back (tidy) as soon as none are.

    For a long-lived block that calls into the database now and then (a turn): calls keep the
    order and the one-at-a-time of a single-thread executor (a turn's stores rely on it), but
    between calls, while tokens stream, the block holds no thread and no database connection.
    Each call must be complete in itself (a transaction does not span two calls), as any
    thread-sensitive call under ASGI is."""

    def __init__(self, pool: ExecutorPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._calls: collections.deque[tuple[Future, Any, tuple, dict]] = collections.deque()
        self._borrowing = False  # a thread is borrowed, or asked for

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            self._calls.append((future, fn, args, kwargs))
            if self._borrowing:
                return future  # the borrowed thread runs it after the calls before it
            self._borrowing = True
        executor = self._pool.take_or_wait(self._start)
        if executor is not None:  # else _start runs when a thread is free
            self._start(executor)
        return future

    def _start(self, executor: ThreadPoolExecutor) -> None:
        executor.submit(self._run_calls, executor)

    def _run_calls(self, executor: ThreadPoolExecutor) -> None:
        """In the borrowed thread: run the waiting calls, then give the thread back."""
        while True:
            with self._lock:
                if not self._calls:
                    self._borrowing = False
                    break
                future, fn, args, kwargs = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
        self._pool.give(executor, tidy=True)


pool = ExecutorPool()


def detached_task[T](coro: Coroutine[Any, Any, T], name: str) -> "asyncio.Task[T]":
    """Start a task that outlives whatever started it (a connection kept for the process).

    A task inherits its creator's context, and with it the request's or turn's borrowed
    thread: once that block ends, the task's synchronous calls would have nowhere to run
    (asgiref raises). A detached task starts from an empty context, so its calls run in
    asgiref's process-wide thread, as any code outside a request does."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())


class InlineExecutor(Executor):
    """Runs each call at once, in the calling thread: for the event loop's own thread, with
    synchronous code that does no blocking I/O (Django's async-unsafe guard raises
    SynchronousOnlyOperation if it touches the database there)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


inline = InlineExecutor()

# Django's own receivers of request_started and request_finished. Each tidies the state of the
# thread it runs in (its database connections, query log, caches, URLconf), and does no
# blocking I/O there: the event loop's thread holds no database connection to close.
_TIDY_RECEIVERS = {reset_queries, close_old_connections, close_caches, reset_urlconf}


def _only_tidy_receivers(handler: type) -> bool:
    """Whether Django's request signals, as sent by `handler` (the sender of both), reach only
    `_TIDY_RECEIVERS` among synchronous receivers."""
    for signal in (request_started, request_finished):
        sync_receivers, _ = signal._live_receivers(handler)
        if not all(receiver in _TIDY_RECEIVERS for receiver in sync_receivers):
            return False
    return True


class PooledASGIHandler(ASGIHandler):
    """Django's ASGI handler, running each request's synchronous code in a pooled thread.

    The thread is borrowed while Django makes the response and given back (tidy: what
    request_finished does for the thread's connections) before a streamed body goes out, so
    an open stream holds no thread.

    Django's request_started and request_finished signals run outside it. Django enters a
    `ThreadSensitiveContext()` per request, and asgiref gives such a context a new thread for
    its first synchronous call (the request_started signal) and, on exit, starts another to
    join it: two threads started per request, and two thread switches. Here the context runs
    those calls inline, on the event loop, while their receivers are Django's own tidy-ups
    (`_TIDY_RECEIVERS`: nothing to tidy on the loop's thread, which holds no connection; the
    pooled thread is tidied when it is given back); any other receiver connected, they run
    in asgiref's process-wide thread, as before."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        tidy_only = _only_tidy_receivers(type(self))
        executor = inline if tidy_only else SyncToAsync.single_thread_executor
        async with ThreadSensitiveContext(executor=executor):
            await self.handle(scope, receive, send)

    @classmethod
    def chunk_bytes(cls, data):
        # What a body is cut into for sending: a part within one chunk (a streamed token, most
        # pages) without a generator.
        if len(data) <= cls.chunk_size:
            return ((data, True),)
        return super().chunk_bytes(data)

    async def run_get_response(self, request):
        async with pool.lend(tidy=True):
            return await super().run_get_response(request)

    async def send_response(self, response, send):
        if response.streaming and not response.is_async:
            # A synchronous iterator (a file) is read in a thread: a pooled one rather than the
            # process-wide one, which a large file would hold up for everybody.
            async with pool.lend():
                return await super().send_response(response, send)
        return await super().send_response(response, send)


class PooledStaticFilesHandler(ASGIStaticFilesHandler, PooledASGIHandler):  # type: ignore[misc]
    """Django's static files handler (`/static/` served by the app itself) on the same
    threads: its own requests go through `PooledASGIHandler`'s entry point, the rest to the
    application it wraps."""
