"""An asyncio network backend for httpcore2 (httpx2): the sockets under outbound HTTP.

httpcore2's default backend goes through anyio, which on every read of a streamed response
enters a cancel scope for the timeout and two exception-mapping context managers; for a chat
answer that is one read per token, for every stream. This backend is a plain
`asyncio.Protocol`: a read that finds data already received returns it without awaiting, and
a timeout is one timer, armed only when a read or a write has to wait.

It implements httpcore2's public `AsyncNetworkBackend` interface (TCP, Unix sockets, TLS via
`loop.start_tls`), and raises httpcore2's own exceptions, so httpx2 behaves as with the default
backend (timeouts become `httpx2.ReadTimeout`, a reset `httpx2.ReadError`, ...).
"""

# The `timeout` parameters are httpcore2's interface (AsyncNetworkStream, AsyncNetworkBackend).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore2
import httpx2

# Stop reading from the socket while this much is received and not yet read.
_HIGH_WATER = 256 * 1024
_SocketOption = httpcore2.SOCKET_OPTION


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.reader: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def _wake_reader(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)


async def _wait(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[None],
    seconds: float | None,
    timeout_error: type[Exception],
) -> None:
    """Wait for `future`, raising `timeout_error` after `seconds` (None: for ever)."""
    if seconds is None:
        await future
        return
    timer = loop.call_later(seconds, _expire, future)
    try:
        await future
    except _Expired:
        raise timeout_error("timed out") from None
    finally:
        timer.cancel()


class _Expired(Exception):
    pass


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(_Expired())


class AsyncioStream(httpcore2.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            protocol.reader = protocol.loop.create_future()
            try:
                await _wait(protocol.loop, protocol.reader, timeout, httpcore2.ReadTimeout)
            finally:
                protocol.reader = None
        buffer = protocol.buffer
        if buffer:
            data = bytes(buffer[:max_bytes])
            del buffer[:max_bytes]
            if protocol.paused and len(buffer) <= _HIGH_WATER // 4:
                protocol.paused = False
                self._transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore2.ReadError(str(protocol.error) or type(protocol.error).__name__)
        return b""  # the peer closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if self._transport.is_closing():
            raise httpcore2.WriteError("the connection is closed")
        self._transport.write(buffer)
        writable = protocol.writable
        if writable is not None and not writable.done():
            await _wait(protocol.loop, writable, timeout, httpcore2.WriteTimeout)
        if protocol.error is not None:
            raise httpcore2.WriteError(str(protocol.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = self._protocol.loop
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport,
                    self._protocol,
                    ssl_context,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=timeout,
                )
        except TimeoutError:
            self._transport.close()
            raise httpcore2.ConnectTimeout("timed out during the TLS handshake") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore2.ConnectError(str(exc)) from exc
        if transport is None:  # pragma: no cover - only for a server-side upgrade
            raise httpcore2.ConnectError("the TLS handshake did not complete")
        self._protocol.transport = transport
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle keep-alive connection with something to read was closed by the server
            # (or sent garbage): httpcore2 then opens a new one.
            return bool(self._protocol.buffer) or self._protocol.eof
        return None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        return await _connect(
            lambda loop, factory: loop.create_connection(factory, host, port, local_addr=local),
            f"{host}:{port}",
            timeout,
            socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        return await _connect(
            lambda loop, factory: loop.create_unix_connection(factory, path),
            path,
            timeout,
            socket_options,
        )

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(
    open_connection: Callable[
        [asyncio.AbstractEventLoop, Callable[[], _Protocol]],
        Awaitable[tuple[asyncio.BaseTransport, Any]],
    ],
    where: str,
    timeout: float | None,
    socket_options: Iterable[_SocketOption] | None,
) -> httpcore2.AsyncNetworkStream:
    loop = asyncio.get_running_loop()
    protocol = _Protocol(loop)
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await open_connection(loop, lambda: protocol)
    except TimeoutError:
        raise httpcore2.ConnectTimeout(f"timed out connecting to {where}") from None
    except OSError as exc:
        raise httpcore2.ConnectError(str(exc)) from exc
    _apply(transport, socket_options)
    return AsyncioStream(transport, protocol)  # type: ignore[arg-type]


def _apply(transport: asyncio.BaseTransport, options: Iterable[_SocketOption] | None) -> None:
    sock: socket.socket | None = transport.get_extra_info("socket")
    if sock is None:
        return
    for option in options or ():
        sock.setsockopt(*option)


class AsyncioTransport(httpx2.AsyncHTTPTransport):
    """httpx2's HTTP transport with its connection pool on `AsyncioBackend`.

    Made without a proxy, as every outbound client here is (trust_env=False)."""

    def __init__(
        self,
        limits: httpx2.Limits,
        verify: ssl.SSLContext | bool = True,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> None:
        ssl_context = httpx2.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            socket_options=socket_options,
            network_backend=AsyncioBackend(),
        )
