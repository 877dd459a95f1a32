"""The MCP registry: one long-lived session per enabled server, shared by every user and turn.

Each server gets a `Connection` whose runner task owns the SDK's transport and session context
managers (anyio requires entering and leaving them in one task). The runner connects, lists the
tools (all pages), then waits until it is stopped, refreshed or the session breaks, and reconnects
with exponential backoff. A server that is down costs only its own tools; its error is kept here
and written to the database for the admin and the API.

Registries are per event loop (sessions and futures are bound to the loop that made them): in
production that is the one server loop; each test gets its own.
"""

import asyncio
import logging
import re
import weakref
from dataclasses import dataclass, field
from typing import Any

import httpx2
import mcp_types as types
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, get_default_environment, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from config.threads import detached_task
from integrations.http import mcp_http_client
from integrations.models import McpServer, McpTool, tool_fingerprint

log = logging.getLogger(__name__)

_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 64  # OpenAI-style function names: ^[A-Za-z0-9_-]{1,64}$


@dataclass(frozen=True)
class ServerConfig:
    """A snapshot of one McpServer row, safe to use off the database thread."""

    server_id: str
    transport: str
    url: str
    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    secret: str
    connect_timeout: float
    call_timeout: float
    approval_policy: str
    enabled: bool
    disabled_tools: frozenset[str]
    key: str

    @classmethod
    def from_model(cls, server: McpServer) -> "ServerConfig":
        return cls(
            server_id=server.server_id,
            transport=server.transport,
            url=server.url,
            command=server.command,
            args=tuple(str(a) for a in server.args or []),
            env=tuple(sorted((str(k), str(v)) for k, v in (server.env or {}).items())),
            headers=tuple(sorted((str(k), str(v)) for k, v in (server.headers or {}).items())),
            secret=server.secret,
            connect_timeout=server.connect_timeout or settings.MCP_CONNECT_TIMEOUT,
            call_timeout=server.call_timeout or settings.MCP_CALL_TIMEOUT,
            approval_policy=server.approval_policy,
            enabled=server.enabled,
            disabled_tools=frozenset(server.disabled_tools or []),
            key=server.connection_key(),
        )


# Every chat turn reads every server's configuration. That query has no parameters, so its SQL
# is the same each time for a database: compiled once per database (alias), and run as a raw
# query, which builds the same model objects (columns by name, JSON fields decoded, the
# ordering in the SQL). Compiling the ORM query was half of reading one server.
_ALL_SERVERS_SQL: dict[str, tuple[str, tuple[Any, ...]]] = {}


def load_configs() -> list[ServerConfig]:
    servers = McpServer.objects.all()
    alias = servers.db
    compiled = _ALL_SERVERS_SQL.get(alias)
    if compiled is None:
        sql, params = servers.query.get_compiler(alias).as_sql()
        compiled = _ALL_SERVERS_SQL[alias] = (sql, tuple(params))
    raw = McpServer.objects.db_manager(alias).raw(compiled[0], compiled[1])
    return [ServerConfig.from_model(s) for s in raw]


@dataclass(frozen=True)
class RemoteTool:
    server_id: str
    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool
    fingerprint: str


@dataclass(frozen=True)
class ToolEntry:
    """A tool as offered to the model: `exposed` is its unique name across all servers."""

    exposed: str
    tool: RemoteTool
    config: ServerConfig

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.exposed,
                "description": self.tool.description[:1024],
                "parameters": self.tool.input_schema or {"type": "object", "properties": {}},
            },
        }


@dataclass
class ToolOutcome:
    ok: bool
    text: str
    images: list[tuple[str, str]] = field(default_factory=list)  # (mime type, base64 data)


class ServerUnavailable(Exception):
    pass


def _stdio_errlog():
    """Where a stdio server's stderr goes: the log stream, not the terminal of a test run."""
    import sys

    return sys.stderr


def _error_text(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text[:500]


class Connection:
    def __init__(self, config: ServerConfig, registry: "Registry") -> None:
        self.config = config
        self.registry = registry
        self.session: ClientSession | None = None
        self.tools: list[RemoteTool] = []
        self.error = ""
        self.connects = 0
        self.attempted = asyncio.Event()  # the first attempt finished, either way
        self._wake = asyncio.Event()
        self._stopped = False
        self._relist: asyncio.Task[None] | None = None
        # Kept for the process, whoever first asked for it (a turn, a request): detached.
        self.task = detached_task(self._run(), name=f"mcp-{config.server_id}")

    @property
    def connected(self) -> bool:
        return self.session is not None

    # Lifecycle -----------------------------------------------------------------------------

    def _transport(self):
        c = self.config
        headers = dict(c.headers)
        if c.secret:
            headers["Authorization"] = f"Bearer {c.secret}"
        timeout = httpx2.Timeout(c.connect_timeout, read=300.0)
        if c.transport == McpServer.Transport.STDIO:
            # Configured variables add to the SDK's safe default environment (PATH, HOME...).
            env = {**get_default_environment(), **dict(c.env)} if c.env else None
            # Relative module paths (the bundled server) resolve from the project directory.
            params = StdioServerParameters(
                command=c.command, args=list(c.args), env=env, cwd=settings.BASE_DIR
            )
            return stdio_client(params, errlog=_stdio_errlog())
        if c.transport == McpServer.Transport.SSE:

            def factory(headers=None, timeout=None, auth=None):
                return mcp_http_client(headers, timeout, auth)

            return sse_client(
                c.url,
                headers=headers,
                timeout=c.connect_timeout,
                httpx_client_factory=factory,
            )
        return streamable_http_client(c.url, http_client=mcp_http_client(headers, timeout))

    async def _run(self) -> None:
        delay = settings.MCP_RECONNECT_MIN_SECONDS
        while not self._stopped:
            self._wake.clear()
            connects_before = self.connects
            lifetime = asyncio.create_task(self._lifetime())
            wake = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait({lifetime, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
                if not lifetime.done():
                    lifetime.cancel()
                try:
                    async with asyncio.timeout(5):
                        await asyncio.gather(lifetime, return_exceptions=True)
                except TimeoutError:
                    log.warning("MCP server %s did not close in time", self.config.server_id)
            self.session = None
            if self._stopped:
                self.attempted.set()
                break
            if self.connects > connects_before:
                delay = settings.MCP_RECONNECT_MIN_SECONDS  # it worked for a while: start over
            if self._wake.is_set():
                continue  # refresh or a broken session: reconnect at once
            if lifetime.done() and not lifetime.cancelled() and lifetime.exception():
                self.error = _error_text(lifetime.exception())  # type: ignore[arg-type]
                log.warning("MCP server %s: %s", self.config.server_id, self.error)
            self.attempted.set()
            await self._save_status()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            delay = min(delay * 2, settings.MCP_RECONNECT_MAX_SECONDS)

    async def _lifetime(self) -> None:
        async with self._transport() as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write, message_handler=self._on_message) as session:
                async with asyncio.timeout(self.config.connect_timeout):
                    await session.initialize()
                    tools = await self._list_tools(session)
                self.session = session
                self.tools = tools
                self.error = ""
                self.connects += 1
                self.attempted.set()
                await self._save_status()
                try:
                    # Until cancelled by stop, refresh or a break; a ping that fails ends the
                    # session, so a server that went away silently is noticed and reconnected.
                    while True:
                        await asyncio.sleep(settings.MCP_PING_SECONDS)
                        async with asyncio.timeout(self.config.connect_timeout):
                            await session.send_ping()
                finally:
                    self.session = None

    async def _list_tools(self, session: ClientSession) -> list[RemoteTool]:
        tools: list[RemoteTool] = []
        cursor: str | None = None
        for _ in range(100):  # a server that pages forever does not hang the app
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            for tool in page.tools:
                description = tool.description or ""
                schema = dict(tool.input_schema or {})
                read_only = bool(tool.annotations and tool.annotations.read_only_hint)
                tools.append(
                    RemoteTool(
                        server_id=self.config.server_id,
                        name=tool.name,
                        description=description,
                        input_schema=schema,
                        read_only=read_only,
                        fingerprint=tool_fingerprint(description, schema),
                    )
                )
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._relist = asyncio.get_running_loop().create_task(self.relist())
        elif isinstance(message, Exception):
            log.info("MCP server %s transport error: %s", self.config.server_id, message)

    async def relist(self) -> None:
        session = self.session
        if session is None:
            return
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                self.tools = await self._list_tools(session)
        except Exception as exc:
            self.error = _error_text(exc)
            self.broken()
            return
        await self._save_status()

    def broken(self) -> None:
        """The session failed under a call: reconnect (with backoff)."""
        self._wake.set()

    def refresh(self) -> None:
        self.attempted.clear()
        self._wake.set()

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        try:
            async with asyncio.timeout(6):
                await asyncio.gather(self.task, return_exceptions=True)
        except TimeoutError:
            self.task.cancel()

    async def _save_status(self) -> None:
        try:
            await sync_to_async(_save_status, thread_sensitive=True)(
                self.config.server_id, self.connected, self.error, list(self.tools)
            )
        except Exception:  # the status is informative; never let it break the connection
            log.exception("could not save the status of MCP server %s", self.config.server_id)

    # Calls ---------------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any], timeout: float) -> ToolOutcome:  # noqa: ASYNC109
        session = self.session
        if session is None:
            raise ServerUnavailable(self.error or "not connected")
        try:
            async with asyncio.timeout(timeout):
                result = await session.call_tool(name, arguments)
        except TimeoutError:
            return ToolOutcome(False, f"The tool timed out after {timeout:g} s.")
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self.broken()
                return ToolOutcome(False, "The tool's server closed the connection mid-call.")
            return ToolOutcome(False, f"The tool failed: {exc.message}")
        except Exception as exc:
            self.broken()
            return ToolOutcome(False, f"The tool's server failed: {_error_text(exc)}")
        return outcome_from_result(result)


def outcome_from_result(result: types.CallToolResult) -> ToolOutcome:
    texts: list[str] = []
    images: list[tuple[str, str]] = []
    for part in result.content or []:
        if isinstance(part, types.TextContent):
            texts.append(part.text)
        elif isinstance(part, types.ImageContent):
            images.append((part.mime_type, part.data))
            texts.append(f"[image {part.mime_type}, shown to the user]")
        elif isinstance(part, types.EmbeddedResource):
            resource = part.resource
            text = getattr(resource, "text", None)
            texts.append(text if text is not None else f"[resource {resource.uri}]")
        else:
            texts.append(f"[{getattr(part, 'type', 'content')}]")
    if not texts and result.structured_content is not None:
        import json

        texts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return ToolOutcome(not result.is_error, "\n".join(texts), images)


def _save_status(server_id: str, connected: bool, error: str, tools: list[RemoteTool]) -> None:
    server = McpServer.objects.filter(server_id=server_id).first()
    if server is None:
        return
    now = timezone.now()
    McpServer.objects.filter(pk=server.pk).update(
        connected=connected, last_error=error, **({"tools_listed_at": now} if connected else {})
    )
    if not connected:
        return
    existing = {t.name: t for t in server.tools.all()}
    for tool in tools:
        row = existing.pop(tool.name, None)
        if row is None:
            McpTool.objects.create(
                server=server,
                name=tool.name,
                description=tool.description,
                input_schema=tool.input_schema,
                read_only=tool.read_only,
                fingerprint=tool.fingerprint,
            )
        elif row.fingerprint != tool.fingerprint or row.read_only != tool.read_only:
            row.description, row.input_schema = tool.description, tool.input_schema
            row.read_only, row.fingerprint = tool.read_only, tool.fingerprint
            row.save()
    McpTool.objects.filter(pk__in=[t.pk for t in existing.values()]).delete()


def aggregate(connections: list[Connection]) -> list[ToolEntry]:
    """Unique, stable names for every enabled tool of every connected, enabled server.

    A name offered by several servers is exposed as `<server id>_<name>` for each of them, so no
    tool is dropped and no name depends on which server answered first.
    """
    offered: list[tuple[Connection, RemoteTool]] = []
    for conn in sorted(connections, key=lambda c: c.config.server_id):
        if not conn.config.enabled or not conn.connected:
            continue
        for tool in conn.tools:
            if tool.name not in conn.config.disabled_tools:
                offered.append((conn, tool))
    counts: dict[str, int] = {}
    for _, tool in offered:
        counts[_safe(tool.name)] = counts.get(_safe(tool.name), 0) + 1
    entries: list[ToolEntry] = []
    used: set[str] = set()
    for conn, tool in offered:
        name = _safe(tool.name)
        if counts[name] > 1:
            name = _safe(f"{conn.config.server_id}_{tool.name}")
        base, n = name, 2
        while name in used:
            name = f"{base[: MAX_NAME - 4]}_{n}"
            n += 1
        used.add(name)
        entries.append(ToolEntry(name, tool, conn.config))
    return entries


def _safe(name: str) -> str:
    return _NAME_OK.sub("_", name)[:MAX_NAME] or "tool"


class Registry:
    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self._lock = asyncio.Lock()

    async def sync(self, configs: list[ServerConfig]) -> None:
        """Match live connections to the configuration: start, restart or stop as needed."""
        async with self._lock:
            wanted = {c.server_id: c for c in configs if c.enabled}
            for server_id in list(self.connections):
                conn = self.connections[server_id]
                config = wanted.get(server_id)
                if config is None or config.key != conn.config.key:
                    del self.connections[server_id]
                    await conn.stop()
                elif config != conn.config:
                    conn.config = config  # tool toggles, timeouts, policy: no reconnect needed
            for server_id, config in wanted.items():
                if server_id not in self.connections:
                    self.connections[server_id] = Connection(config, self)

    async def wait_ready(self) -> None:
        """Wait (bounded by each server's connect timeout) for first connection attempts."""
        waits = []
        for conn in self.connections.values():
            if not conn.attempted.is_set():
                waits.append(self._wait_one(conn))
        if waits:
            await asyncio.gather(*waits)

    @staticmethod
    async def _wait_one(conn: Connection) -> None:
        try:
            async with asyncio.timeout(conn.config.connect_timeout + 1):
                await conn.attempted.wait()
        except TimeoutError:
            pass

    async def catalogue(self, configs: list[ServerConfig] | None = None) -> list[ToolEntry]:
        """The tools of every configured server (`configs`: read by the caller already)."""
        if configs is None:
            configs = await sync_to_async(load_configs, thread_sensitive=True)()
        await self.sync(configs)
        await self.wait_ready()
        return aggregate(list(self.connections.values()))

    async def call(self, entry: ToolEntry, arguments: dict[str, Any]) -> ToolOutcome:
        conn = self.connections.get(entry.config.server_id)
        if conn is None:
            raise ServerUnavailable("the server is not configured or is disabled")
        return await conn.call(entry.tool.name, arguments, entry.config.call_timeout)

    async def refresh(self) -> None:
        configs = await sync_to_async(load_configs, thread_sensitive=True)()
        await self.sync(configs)
        for conn in self.connections.values():
            conn.refresh()
        await self.wait_ready()

    async def close(self) -> None:
        async with self._lock:
            conns = list(self.connections.values())
            self.connections.clear()
        await asyncio.gather(*(c.stop() for c in conns), return_exceptions=True)

    def status(self, server_id: str) -> Connection | None:
        return self.connections.get(server_id)


_registries: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Registry]" = (
    weakref.WeakKeyDictionary()
)


def get_registry() -> Registry:
    loop = asyncio.get_running_loop()
    registry = _registries.get(loop)
    if registry is None:
        registry = _registries[loop] = Registry()
    return registry


async def close_registry() -> None:
    registry = _registries.pop(asyncio.get_running_loop(), None)
    if registry is not None:
        await registry.close()
