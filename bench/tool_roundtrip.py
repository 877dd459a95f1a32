"""Tool round-trip overhead added by the app (issue 4, item 10).

For each chat turn the model (a scripted fake upstream, in a process of its own) asks for one
tool call of
a 0 ms tool on a real MCP server (SDK, streamable HTTP, 127.0.0.1). The "round trip" is the time
from the upstream sending the last byte of the tool-call round to the arrival of the next request
carrying the tool result. It includes the MCP call itself, so each turn's own call is timed
inside the app (the registry's call, SDK included) and subtracted: what is left is what the app
adds around the call (reading the round, storing, building and sending the next request,
events). The same call made straight through the SDK (a bare `ClientSession.call_tool`, same
concurrency) is printed for scale.
Measured at 1 and 20 concurrent turns; the target is <= 5 ms added at p50.

Run: uv run python bench/tool_roundtrip.py [--turns 200]
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_ADDED_P50_MS = 5.0


def _serve(app) -> tuple[int, object]:
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="critical"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return sock.getsockname()[1], server


def _mcp_app():
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    server = MCPServer("bench")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def noop(tag: str = "") -> str:
        """Answers at once (`tag` lets the bench match the call to its turn)."""
        return "ok"

    return server.streamable_http_app()


class Upstream:
    """A minimal OpenAI-compatible streaming upstream that asks for `noop` once per turn."""

    def __init__(self) -> None:
        self.sent_call: dict[str, float] = {}  # call id -> when the tool round's last byte left
        self.got_result: dict[str, float] = {}  # call id -> when the result arrived
        self.ids = 0

    def app(self):
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        async def completions(request):
            body = await request.json()
            messages = body["messages"]
            if messages[-1]["role"] == "tool":
                self.got_result[messages[-1]["tool_call_id"]] = time.monotonic()
                return StreamingResponse(self._answer(), media_type="text/event-stream")
            self.ids += 1
            return StreamingResponse(self._ask(f"call_{self.ids}"), media_type="text/event-stream")

        async def stats(request):
            return JSONResponse({"sent": self.sent_call, "got": self.got_result})

        return Starlette(
            routes=[
                Route("/api/v1/chat/completions", completions, methods=["POST"]),
                Route("/stats", stats),
            ]
        )

    @staticmethod
    def _chunk(delta: dict, finish: str | None = None) -> bytes:
        chunk = {"id": "gen", "model": "bench/model", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        return f"data: {json.dumps(chunk)}\n\n".encode()

    async def _ask(self, call_id: str):
        arguments = json.dumps({"tag": call_id})
        call = {"index": 0, "id": call_id, "type": "function",
                "function": {"name": "noop", "arguments": arguments}}  # fmt: skip
        yield self._chunk({"role": "assistant", "tool_calls": [call]})
        yield self._chunk({}, "tool_calls") + b"data: [DONE]\n\n"
        self.sent_call[call_id] = time.monotonic()

    async def _answer(self):
        yield self._chunk({"content": "done"})
        yield self._chunk({}, "stop") + b"data: [DONE]\n\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# Call id -> how long the app's own MCP call took (Registry.call, SDK included), in ms.
CALL_MS: dict[str, float] = {}


def _time_registry_calls() -> None:
    """Record each tool call's own duration inside the app, keyed by the call id the fake
    upstream puts in its arguments: the round trip minus it is what the app adds."""
    from integrations.registry import Registry

    call = Registry.call

    async def timed(self, entry, arguments):
        started = time.monotonic()
        try:
            return await call(self, entry, arguments)
        finally:
            CALL_MS[str(arguments.get("tag"))] = (time.monotonic() - started) * 1000

    Registry.call = timed  # type: ignore[method-assign]


async def run_turns(
    user, upstream: str, total: int, concurrency: int
) -> tuple[list[float], list[float]]:
    """Round trips of `total` turns, `concurrency` at a time, and for each what the app added
    around its own tool call (the round trip minus that call's duration)."""
    from asgiref.sync import sync_to_async

    from chat import services

    before = set((await _stats(upstream))["sent"])
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            request = services.TurnInput(messages=[{"role": "user", "content": "go"}])
            prepared = await sync_to_async(services.prepare_turn)(user, request)
            turn = services.start_turn(prepared)
            queue = turn.subscribe()
            while (await queue.get()).name != "end":
                pass

    await asyncio.gather(*(one() for _ in range(total)))
    stats = await _stats(upstream)
    new = [cid for cid in stats["sent"] if cid not in before]
    trips = [(stats["got"][c] - stats["sent"][c]) * 1000 for c in new]
    return trips, [trip - CALL_MS[c] for trip, c in zip(trips, new, strict=True)]


async def _stats(base_url) -> dict:
    import httpx

    async with httpx.AsyncClient() as client:
        return (await client.get(f"{base_url}/stats")).json()


async def run_baseline(url: str, total: int, concurrency: int) -> list[float]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    times: list[float] = []
    transport = streamable_http_client(url, http_client=httpx2.AsyncClient())
    async with transport as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        await session.list_tools()  # as any client does (the SDK then checks results' schemas)
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with semaphore:
                start = time.monotonic()
                await session.call_tool("noop", {})
                times.append((time.monotonic() - start) * 1000)

        await asyncio.gather(*(one() for _ in range(min(20, total))))  # warm-up
        times.clear()
        await asyncio.gather(*(one() for _ in range(total)))
    return times


async def main(turns: int) -> None:
    from asgiref.sync import sync_to_async
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from integrations.models import McpServer
    from integrations.registry import close_registry

    # The fakes run in a process of their own, so they do not share the app's interpreter lock.
    fakes = subprocess.Popen(
        [sys.executable, __file__, "--serve-fakes"], stdout=subprocess.PIPE, text=True
    )
    assert fakes.stdout is not None
    mcp_port, up_port = (int(p) for p in fakes.stdout.readline().split())
    upstream = f"http://127.0.0.1:{up_port}"
    settings.OPENROUTER_BASE_URL = f"http://127.0.0.1:{up_port}/api/v1"
    settings.OPENROUTER_API_KEY = "bench"
    mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
    await sync_to_async(McpServer.objects.create)(
        server_id="bench", url=mcp_url, approval_policy=McpServer.Approval.NEVER
    )
    user = await sync_to_async(get_user_model().objects.create_user)("bench", password="x")

    _time_registry_calls()
    await run_turns(user, upstream, 10, 1)  # warm-up: connect, first queries
    print(f"Tool round trip (ms), {turns} turns per row; 0 ms tool over streamable HTTP")
    print("  app: the round trip through the app; call: the app's own MCP call within it;")
    print("  added: round trip minus its own call, per turn (what the app adds around the call);")
    print("  sdk: the same call made straight through the SDK, same concurrency (for scale)")
    print(f"{'concurrency':>11} {'app p50':>8} {'app p95':>8} {'call p50':>8} {'sdk p50':>8}"
          f" {'sdk p95':>8} {'added p50':>9} {'added p95':>9}")  # fmt: skip
    verdicts = []
    for concurrency in (1, 20):
        app, added_each = await run_turns(user, upstream, turns, concurrency)
        calls = [trip - added for trip, added in zip(app, added_each, strict=True)]
        base = await run_baseline(mcp_url, turns, concurrency)
        added = percentile(added_each, 50)
        print(
            f"{concurrency:>11} {percentile(app, 50):>8.2f} {percentile(app, 95):>8.2f} "
            f"{percentile(calls, 50):>8.2f} {percentile(base, 50):>8.2f} "
            f"{percentile(base, 95):>8.2f} {added:>9.2f} {percentile(added_each, 95):>9.2f}"
        )
        verdicts.append((concurrency, added))
    await close_registry()
    fakes.terminate()
    fakes.wait(timeout=10)
    for concurrency, added in verdicts:
        mark = "OK" if added <= TARGET_ADDED_P50_MS else "ABOVE TARGET"
        print(f"c={concurrency}: added p50 {added:.2f} ms (target <= {TARGET_ADDED_P50_MS} ms) "
              f"{mark}")  # fmt: skip
    print(
        f"(machine speed: the reference workload took {_reference_cpu_ms():.1f} ms of CPU; "
        "absolute figures scale with it, see bench/README.md)"
    )


def _reference_cpu_ms() -> float:
    from bench._common import reference_cpu_ms

    return reference_cpu_ms()


def serve_fakes() -> None:
    mcp_port, _ = _serve(_mcp_app())
    up_port, _ = _serve(Upstream().app())
    print(mcp_port, up_port, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--serve-fakes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fakes:
        serve_fakes()
    data_dir = tempfile.mkdtemp(prefix="bench-tools-")
    os.environ["DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import uvloop

    # On uvloop, as `serve` runs the app.
    uvloop.run(main(args.turns))
