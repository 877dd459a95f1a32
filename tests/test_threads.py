"""Requests and turns run their synchronous code in reused threads (config.threads)."""

import asyncio
import threading
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.signals import request_finished
from django.db import connection

from config.threads import ExecutorPool, detached_task
from tests.servers import ThreadedServer


def _thread_and_connection() -> tuple[int, object]:
    connection.ensure_connection()
    return threading.get_ident(), connection.connection


@pytest.mark.django_db(transaction=True)
def test_requests_reuse_threads_and_their_database_connections(token):
    from config.asgi import application

    # Objects, not ids: kept alive here, they cannot be mistaken for one another.
    seen: list[tuple[threading.Thread, object]] = []

    def record(**kwargs):
        # request_finished runs in the request's thread, before Django's connection housekeeping.
        seen.append((threading.current_thread(), connection.connection))

    request_finished.connect(record, weak=False)
    server = ThreadedServer(application, loop="uvloop", http="httptools").start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for done in range(1, 7):
                # The token lookup and the ownership check query the database.
                response = client.get(
                    "/api/chat/generation/gen-unknown",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 404
                # The response goes out before Django finishes the request: wait for the end
                # (request_finished, then the thread goes back to the pool) before the next.
                deadline = time.monotonic() + 5
                while len(seen) < done and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(0.05)
    finally:
        server.stop()
        request_finished.disconnect(record)

    assert len(seen) == 6
    threads = {id(thread) for thread, _ in seen}
    assert len(threads) == 1, "each request ran in a new thread"
    assert all(thread.name.startswith("sync") for thread, _ in seen)
    assert all(conn is not None for _, conn in seen)
    per_thread = {(id(thread), id(conn)) for thread, conn in seen}
    assert len(per_thread) == len(threads), "a thread opened a new database connection"


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
