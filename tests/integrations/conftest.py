import asyncio
import json
import sys
import time
from typing import Any

import pytest

from integrations.models import McpServer
from integrations.registry import close_registry
from tests.conftest import private_attachments_storage
from tests.integrations.mcp_testserver import build
from tests.servers import ThreadedServer
from tests.sse import SSEvent, parse_sse


class Counting:
    """ASGI middleware counting new MCP sessions (a POST without a session id starts one on
    streamable HTTP; a GET of /sse starts one on SSE)."""

    def __init__(self, app, transport: str) -> None:
        self.app = app
        self.transport = transport
        self.sessions = 0
        self.headers: list[dict[bytes, bytes]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            self.headers.append(headers)
            if self.transport == "sse":
                if scope["method"] == "GET" and scope["path"].endswith("/sse"):
                    self.sessions += 1
            elif scope["method"] == "POST" and b"mcp-session-id" not in headers:
                self.sessions += 1
        await self.app(scope, receive, send)


class McpHttpServer(ThreadedServer):
    """A real MCP server (SDK) served by uvicorn on 127.0.0.1 in a thread, with its lifespan."""

    def __init__(
        self, name: str, transport: str = "streamable_http", port: int = 0, mcp=None
    ) -> None:
        self.mcp = mcp or build(name)
        app = self.mcp.sse_app() if transport == "sse" else self.mcp.streamable_http_app()
        self.app = Counting(app, transport)
        self.transport = transport
        super().__init__(self.app, lifespan="on", port=port)

    @property
    def url(self) -> str:
        path = "/sse" if self.transport == "sse" else "/mcp"
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def sessions(self) -> int:
        return self.app.sessions


@pytest.fixture
async def mcp_server():
    """Factory: start a real MCP server over HTTP (`streamable_http` or `sse`)."""
    started: list[McpHttpServer] = []

    def make(name: str = "alpha", transport: str = "streamable_http", port: int = 0, mcp=None):
        server = McpHttpServer(name, transport, port, mcp).start()
        started.append(server)
        return server

    yield make
    await close_registry()  # close client sessions while their servers are still up
    for server in started:
        server.stop()


@pytest.fixture
def add_server(db):
    """Factory: configure an MCP server in the database."""

    def add(server_id: str, url: str = "", **fields: Any) -> McpServer:
        return McpServer.objects.create(server_id=server_id, url=url, **fields)

    return add


@pytest.fixture
def add_stdio_server(add_server):
    def add(server_id: str = "local", **fields: Any) -> McpServer:
        return add_server(
            server_id,
            transport=McpServer.Transport.STDIO,
            command=sys.executable,
            args=["-m", "tests.integrations.mcp_testserver"],
            **fields,
        )

    return add


@pytest.fixture(autouse=True)
def mcp_settings(settings):
    settings.MCP_CONNECT_TIMEOUT = 5.0
    settings.MCP_CALL_TIMEOUT = 5.0
    settings.MCP_RECONNECT_MIN_SECONDS = 0.05
    settings.MCP_RECONNECT_MAX_SECONDS = 0.5
    settings.MCP_APPROVAL_TIMEOUT = 5.0
    settings.PLANNER_TIMEOUT = 2.0
    return settings


@pytest.fixture(autouse=True)
def attachments_storage(settings, tmp_path):
    """Images tools return are stored as attachments: each test gets its own directory."""
    return private_attachments_storage(settings, tmp_path)


@pytest.fixture(autouse=True)
async def close_mcp_registry():
    """Each test's event loop has its own registry: close its sessions with the test."""
    yield
    await close_registry()


def set_calls(fake, *calls: tuple[str, dict[str, Any]]) -> None:
    """Script the tool calls the fake model makes in a round."""
    fake.round_calls = [{"name": n, "arguments": json.dumps(a)} for n, a in calls]


async def chat(client, model: str = "fake/tool-turn", text: str = "please use the tool", **body):
    """Run one chat turn through the SSE API and return its events."""
    body.setdefault("messages", [{"role": "user", "content": text}])
    response = await client.post(
        "/api/chat/stream", {"model": model, **body}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    raw = b"".join([chunk async for chunk in response.streaming_content])
    return parse_sse(raw)[0]


async def iter_events(client, model: str = "fake/tool-turn", text: str = "go", **body):
    """Yield a turn's events as they arrive (to answer approval cards mid-turn)."""
    body.setdefault("messages", [{"role": "user", "content": text}])
    response = await client.post(
        "/api/chat/stream", {"model": model, **body}, content_type="application/json"
    )
    assert response.status_code == 200
    buffer = b""
    async for chunk in response.streaming_content:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            events, _ = parse_sse(block + b"\n\n")
            for event in events:
                yield event


def tool_events(events: list[SSEvent]) -> list[dict[str, Any]]:
    return [e.json for e in events if e.name == "tool"]


async def eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()
