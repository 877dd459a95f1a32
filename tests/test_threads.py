"""Requests and turns run their synchronous code in reused threads (config.threads)."""

import asyncio
import threading
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.signals import request_started
from django.db import connection

from chat.models import Message
from config.threads import (
    ExecutorPool,
    InlineExecutor,
    LendingExecutor,
    PooledASGIHandler,
    detached_task,
)


async def _all_given_back(pool: ExecutorPool) -> bool:
    """The last call's thread is given back just after the caller hears of the result."""
    for _ in range(100):
        if pool.lent == 0:
            return True
        await asyncio.sleep(0.01)
    return False


def _on_event_loop() -> bool:
    """Whether the calling thread is running an event loop (a request's loop, not a thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _thread_and_connection() -> tuple[int, object]:
    connection.ensure_connection()
    return threading.get_ident(), connection.connection


@pytest.mark.django_db(transaction=True)
def test_requests_reuse_threads_and_their_database_connections(app_server, token, monkeypatch):
    from chat import services

    # Objects, not ids: kept alive here, they cannot be mistaken for one another.
    seen: list[tuple[threading.Thread, object]] = []
    lookup = services.authenticate_token

    def record(raw):
        user = lookup(raw)  # queries the database, in the request's thread
        seen.append((threading.current_thread(), connection.connection))
        return user

    monkeypatch.setattr(services, "authenticate_token", record)
    with httpx.Client(base_url=app_server.url, timeout=10) as client:
        for _ in range(6):
            # The thread is back in the pool before the response goes out: the next request
            # can have it.
            response = client.get(
                "/api/chat/generation/gen-unknown", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 404

    assert len(seen) == 6
    threads = {id(thread) for thread, _ in seen}
    assert len(threads) == 1, "each request ran in a new thread"
    assert all(thread.name.startswith("sync") for thread, _ in seen)
    assert all(conn is not None for _, conn in seen)
    per_thread = {(id(thread), id(conn)) for thread, conn in seen}
    assert len(per_thread) == len(threads), "a thread opened a new database connection"


@pytest.mark.django_db(transaction=True)
def test_requests_start_no_threads(app_server, token, monkeypatch):
    """Django's request_started/request_finished hops run in a standing thread too: asgiref
    would otherwise make a thread per request for them and another to join it."""
    started: list[str] = []
    start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    with httpx.Client(base_url=app_server.url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/chat/generation/gen-unknown", headers=headers).status_code == 404
        assert client.get("/static/js/chat.js").status_code == 200
        monkeypatch.setattr(threading.Thread, "start", counting_start)
        for _ in range(5):
            response = client.get("/api/chat/generation/gen-unknown", headers=headers)
            assert response.status_code == 404
            assert client.get("/health").status_code == 200
            assert client.get("/static/js/chat.js").status_code == 200

    assert started == []


@pytest.mark.django_db(transaction=True)
def test_djangos_request_signals_run_on_the_event_loop(app_server, token, monkeypatch):
    """request_started (before the view) and the response's close (request_finished after
    it): two synchronous calls, run inline instead of by a thread switch each."""
    calls: list[bool] = []
    submit = InlineExecutor.submit

    def recording_submit(self, fn, /, *args, **kwargs):
        calls.append(_on_event_loop())
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(InlineExecutor, "submit", recording_submit)
    with httpx.Client(base_url=app_server.url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/chat/generation/gen-unknown", headers=headers).status_code == 404
    # The response's close (request_finished) runs just after its body has gone out.
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [True, True]


@pytest.mark.parametrize("sender", [None, PooledASGIHandler])
@pytest.mark.django_db(transaction=True)
def test_another_request_signal_receiver_runs_in_a_thread(app_server, token, sender):
    """A receiver that is not one of Django's tidy-ups may block (the database, a file): it
    runs in asgiref's process-wide thread, off the event loop (connected for any sender, or
    for the handler's class)."""
    seen: list[tuple[str, bool]] = []

    def receiver(**kwargs):
        seen.append((threading.current_thread().name, _on_event_loop()))

    request_started.connect(receiver, sender=sender)
    try:
        with httpx.Client(base_url=app_server.url, timeout=10) as client:
            headers = {"Authorization": f"Bearer {token}"}
            response = client.get("/api/chat/generation/gen-unknown", headers=headers)
            assert response.status_code == 404
    finally:
        request_started.disconnect(receiver, sender=sender)
    assert len(seen) == 1
    assert seen[0][1] is False, "the receiver ran on the event loop"


@pytest.mark.django_db(transaction=True)
def test_an_open_answer_stream_holds_no_thread(app_server, fake_openrouter, token, settings):
    """Neither the streaming response nor its turn keeps a thread (and with it a database
    connection) while tokens flow: 50 streams once held 100 PostgreSQL connections."""
    from config.threads import pool

    settings.CHAT_CHECKPOINT_SECONDS = 60  # no checkpoint write during the test
    fake_openrouter.slow_token_delay = 0.02
    body = {"model": "fake/slow", "messages": [{"role": "user", "content": "count"}]}
    lent_mid_stream = []
    with (
        httpx.Client(base_url=app_server.url, timeout=10) as client,
        client.stream(
            "POST", "/api/chat/stream", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        assert response.status_code == 200
        tokens = 0
        for line in response.iter_lines():
            if not (line.startswith("data:") and '"t' in line):
                continue
            tokens += 1
            if tokens in (3, 6):
                lent_mid_stream.append(pool.lent)
            if tokens == 6:
                break
    assert lent_mid_stream == [0, 0]
    # Going away cancels the turn, which stores what it had: a call that borrows a thread.
    assert fake_openrouter.wait_closed_streams(1, timeout=5)
    deadline = time.monotonic() + 5
    while Message.objects.get(role="assistant").status == "streaming":
        assert time.monotonic() < deadline, "the cancelled answer was not stored"
        time.sleep(0.02)


@pytest.mark.django_db(transaction=True)
async def test_a_lent_executor_runs_the_blocks_sync_calls_and_is_reused():
    pool = ExecutorPool(max_idle=4)
    try:
        async with pool.lend() as executor:
            owner = executor.submit(threading.get_ident).result()
            first = await sync_to_async(_thread_and_connection)()
            assert first[0] == owner
            assert await sync_to_async(threading.get_ident)() == owner
        async with pool.lend() as again:
            assert again is executor
            assert await sync_to_async(_thread_and_connection)() == first
        assert pool.created == 1
    finally:
        pool.close()


@pytest.mark.django_db(transaction=True)
async def test_blocks_at_the_same_time_get_threads_of_their_own():
    pool = ExecutorPool(max_idle=4)
    both_inside = asyncio.Barrier(2)

    async def block() -> int:
        async with pool.lend():
            await both_inside.wait()
            return await sync_to_async(threading.get_ident)()

    try:
        first, second = await asyncio.gather(block(), block())
        assert first != second
        assert pool.created == 2
    finally:
        pool.close()


def test_executors_beyond_the_idle_limit_are_stopped():
    pool = ExecutorPool(max_idle=1)
    kept, extra = pool.take(), pool.take()
    pool.give(kept)
    pool.give(extra)
    assert pool.take() is kept
    assert extra._shutdown
    pool.give(kept)
    pool.close()
    assert kept._shutdown


@pytest.mark.django_db(transaction=True)
async def test_tidy_return_closes_an_obsolete_connection_before_the_next_borrower():
    """A turn has no request_finished: returning its executor runs Django's housekeeping."""
    pool = ExecutorPool(max_idle=4)

    def age_out() -> object:
        connection.ensure_connection()
        connection.close_at = 0  # past its CONN_MAX_AGE
        return connection.connection

    try:
        async with pool.lend(tidy=True):
            old = await sync_to_async(age_out)()
        async with pool.lend():
            assert await sync_to_async(lambda: connection.connection)() is None
            _, new = await sync_to_async(_thread_and_connection)()
        assert new is not old
        async with pool.lend():  # an untidy return keeps the connection
            _, kept = await sync_to_async(_thread_and_connection)()
        assert kept is new
    finally:
        pool.close()


def test_executors_idle_past_the_limit_are_stopped_when_one_is_returned():
    pool = ExecutorPool(max_idle=4, idle_seconds=0.05)
    old, recent = pool.take(), pool.take()
    pool.give(old)
    time.sleep(0.1)
    pool.give(recent)  # `old` has been idle longer than idle_seconds
    assert old._shutdown
    assert pool.take() is recent
    pool.give(recent)
    pool.close()


@pytest.mark.django_db(transaction=True)
async def test_a_detached_task_keeps_working_after_the_block_that_started_it():
    """A connection kept for the process (an MCP server's) may be first asked for by a turn;
    its later database work must not depend on that turn's borrowed thread."""
    pool = ExecutorPool(max_idle=4)
    go = asyncio.Event()

    async def later() -> int:
        await go.wait()
        return await sync_to_async(threading.get_ident)()

    try:
        async with pool.lend() as executor:
            lent_thread = executor.submit(threading.get_ident).result()
            detached = detached_task(later(), name="kept")
            inherited = asyncio.get_running_loop().create_task(later())
        go.set()
        assert await detached != lent_thread
        with pytest.raises(RuntimeError, match="ThreadSensitiveContext has exited"):
            await inherited  # what the detached task avoids
    finally:
        pool.close()


@pytest.mark.django_db(transaction=True)
async def test_per_call_lending_keeps_the_order_and_holds_no_thread_between_calls():
    pool = ExecutorPool(max_idle=4)
    order: list[int] = []
    inside = threading.Lock()

    def call(n: int) -> tuple[int, object]:
        # One at a time: a call that finds another running fails the test.
        assert inside.acquire(blocking=False), "two calls of the block ran at once"
        try:
            time.sleep(0.01)
            order.append(n)
            return _thread_and_connection()
        finally:
            inside.release()

    try:
        async with pool.lend_per_call():
            # Made at the same time, the calls still run one after another, as submitted.
            first = await asyncio.gather(*(sync_to_async(call)(n) for n in range(5)))
            assert order == [0, 1, 2, 3, 4]
            assert len(set(first)) == 1, "the waiting calls ran in one borrowed thread"
            assert await _all_given_back(pool), "the thread was kept after the calls"
            # The next call borrows the pool's warmest thread again, connection and all.
            assert await sync_to_async(_thread_and_connection)() == first[0]
            assert await _all_given_back(pool)
        assert pool.created == 1
    finally:
        pool.close()


@pytest.mark.django_db(transaction=True)
async def test_a_failing_call_gives_its_thread_back_and_the_next_call_runs():
    pool = ExecutorPool(max_idle=4)

    def fail() -> None:
        raise ValueError("boom")

    try:
        async with pool.lend_per_call():
            with pytest.raises(ValueError, match="boom"):
                await sync_to_async(fail)()
            assert await _all_given_back(pool)
            assert await sync_to_async(lambda: 42)() == 42
    finally:
        pool.close()


def test_a_cancelled_waiting_call_is_skipped():
    pool = ExecutorPool(max_idle=4)
    executor = LendingExecutor(pool)
    release = threading.Event()
    try:
        running = executor.submit(release.wait, 5)
        waiting = executor.submit(lambda: "ran")
        after = executor.submit(lambda: "after")
        assert waiting.cancel()
        release.set()
        assert running.result(timeout=5) is True
        assert after.result(timeout=5) == "after"
        assert waiting.cancelled()
    finally:
        pool.close()


@pytest.mark.django_db(transaction=True)
async def test_borrowers_past_the_limit_wait_for_a_thread_to_come_back():
    """Threads, and so database connections, never outnumber the limit: the third block
    waits, then gets a thread given back, connection and all."""
    pool = ExecutorPool(max_threads=2)
    inside = 0
    most_inside = 0
    release = asyncio.Event()

    async def block() -> tuple[int, object]:
        nonlocal inside, most_inside
        async with pool.lend():
            inside += 1
            most_inside = max(most_inside, inside)
            await release.wait()
            seen = await sync_to_async(_thread_and_connection)()
            inside -= 1
            return seen

    try:
        blocks = [asyncio.ensure_future(block()) for _ in range(3)]
        for _ in range(50):
            await asyncio.sleep(0.01)
            if most_inside == 2:
                break
        assert most_inside == 2 and pool.lent == 2
        assert not blocks[2].done()
        release.set()
        seen = await asyncio.gather(*blocks)
        assert most_inside == 2
        assert pool.created == 2
        assert len({thread for thread, _ in seen}) == 2
        assert await _all_given_back(pool)
    finally:
        pool.close()


async def test_a_borrower_that_stops_waiting_does_not_keep_the_thread():
    pool = ExecutorPool(max_threads=1)
    try:
        held = await pool.borrow()
        waiting = asyncio.ensure_future(pool.borrow())
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        pool.give(held)
        await asyncio.sleep(0.01)  # the hand-over to the cancelled waiter runs on the loop
        assert pool.lent == 0
        assert await pool.borrow() is held
    finally:
        pool.close()


@pytest.mark.django_db(transaction=True)
async def test_per_call_lending_waits_for_a_thread_when_all_are_lent():
    pool = ExecutorPool(max_threads=1)
    try:
        async with pool.lend() as executor:
            owner = executor.submit(threading.get_ident).result()

            async def turn_call() -> int:
                async with pool.lend_per_call():
                    return await sync_to_async(threading.get_ident)()

            call = asyncio.ensure_future(turn_call())
            await asyncio.sleep(0.05)
            assert not call.done(), "the call ran past the limit"
        assert await call == owner
        assert await _all_given_back(pool)
        assert pool.created == 1
    finally:
        pool.close()


@pytest.mark.parametrize("size", [0, 1, 100, 65536, 65537, 3 * 65536 + 5])
def test_bodies_are_cut_as_django_cuts_them(size):
    from django.core.handlers.asgi import ASGIHandler

    from config.threads import PooledASGIHandler

    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert list(PooledASGIHandler.chunk_bytes(data)) == list(ASGIHandler.chunk_bytes(data))
