"""httpx2's transport interface over aiohttp's client: the connections under outbound HTTP.

The model API streams one small chunk per token, and reading it is the server's main per-token
work. httpx2's own transport parses HTTP/1.1 with h11, in pure Python, under four layers of
async generators (httpcore2's connection, pool and stream wrappers): ~30 us of CPU per token
here. aiohttp parses with llhttp (C) and hands back what the socket delivered, so the same
reading costs about half (bench/README.md). The client code keeps httpx2's API (requests,
responses, timeouts, errors): only the layer under it changes, as with the `httpx-aiohttp`
transport the OpenAI SDK offers for the same reason.

What it keeps of httpx2's behaviour: no redirects (the client does not follow them either), no
proxies from the environment, TLS verified with httpx2's default context, the body left
encoded for httpx2 to decode, and every failure raised as the httpx2 exception httpx2's own
transport would raise (timeouts by phase, connect errors, a dropped or malformed response).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx2

# aiohttp adds these unless told not to; httpx2 has already set what it sends.
_SKIP_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def _timeout(request: httpx2.Request) -> aiohttp.ClientTimeout:
    timeout = request.extensions.get("timeout") or {}
    connect, read, pool = timeout.get("connect"), timeout.get("read"), timeout.get("pool")
    return aiohttp.ClientTimeout(
        total=None,
        # aiohttp's `connect` covers the wait for a free connection and the connect itself.
        connect=None if connect is None or pool is None else connect + pool,
        sock_connect=connect,
        # Every read of the response, headers and body: a stall raises ReadTimeout.
        sock_read=read,
    )


class _StallWatch:
    """A body's read timeout: raises it in the body's reader once `timeout` seconds pass
    without data (between 1 and 1.25 times `timeout`, checked four times per `timeout`).

    aiohttp's own (`sock_read`) cancels and re-arms a timer for every chunk received: with a
    chunk per token, that was 2% of the server's CPU while streaming. This one looks at the
    count of bytes received from one timer, whatever the number of chunks."""

    def __init__(self, response: aiohttp.ClientResponse, timeout: float) -> None:
        self._response = response
        self._interval = timeout / 4
        self._seen = -1
        self._quiet = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(self._interval, self._check)

    def _check(self) -> None:
        received = self._response.content.total_bytes
        if received != self._seen:
            self._seen, self._quiet = received, 0
        else:
            self._quiet += 1
            if self._quiet >= 4:
                # What aiohttp's own read timeout does: the reader raises it.
                self._response.content.set_exception(
                    aiohttp.SocketTimeoutError("Timeout on reading data from socket")
                )
                return
        self._handle = self._loop.call_later(self._interval, self._check)

    def stop(self) -> None:
        self._handle.cancel()


class _Body(httpx2.AsyncByteStream):
    def __init__(
        self, response: aiohttp.ClientResponse, request: httpx2.Request, read_timeout: float | None
    ) -> None:
        self._response = response
        self._request = request
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        watch = None
        connection = self._response.connection
        if self._read_timeout and connection is not None and connection.protocol is not None:
            # The headers are in (aiohttp timed their wait): the body's reads are timed here.
            connection.protocol.read_timeout = None
            connection.protocol.start_timeout()  # drops the timer armed by the last chunk
            watch = _StallWatch(self._response, self._read_timeout)
        try:
            while True:
                # What has arrived, as it arrived (a chunk per token for a streamed answer).
                data = await content.readany()
                if not data:
                    break
                yield data
        except (TimeoutError, aiohttp.SocketTimeoutError):
            self._response.close()  # a stalled connection is not reused
            raise httpx2.ReadTimeout(
                "timed out reading the response", request=self._request
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise httpx2.RemoteProtocolError(str(exc), request=self._request) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx2.ReadError(str(exc) or type(exc).__name__, request=self._request) from exc
        finally:
            if watch is not None:
                watch.stop()

    async def aclose(self) -> None:
        # A body read to its end leaves the connection in the pool; one closed early closes it.
        self._response.release()


async def _close_at_shutdown(session: aiohttp.ClientSession) -> None:
    try:
        await asyncio.Future()
    finally:
        await session.close()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport on one aiohttp session (its own keep-alive pool), made lazily in the
    running event loop."""

    def __init__(self, limits: httpx2.Limits, verify: ssl.SSLContext | bool = True) -> None:
        self._limits = limits
        self._ssl = httpx2.create_ssl_context(verify=verify, trust_env=False)
        self._session: aiohttp.ClientSession | None = None
        self._keeper: asyncio.Task[None] | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._new_session()
            # The session lives as long as its event loop: a task holds it and closes it when
            # the loop shuts down (asyncio.run, uvicorn and asgiref cancel the tasks they leave),
            # so no server or test has to remember to, and no unclosed session is left behind.
            self._keeper = asyncio.get_running_loop().create_task(
                _close_at_shutdown(self._session), name="outbound-http-session"
            )
        return self._session

    def _new_session(self) -> aiohttp.ClientSession:
        limits = self._limits
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=limits.keepalive_expiry or 0,
            ssl=self._ssl,
        )
        return aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,  # httpx2 decodes Content-Encoding itself
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_HEADERS,
            raise_for_status=False,
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._get_session()
        body = await request.aread()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in (b"host", b"content-length", b"transfer-encoding")
        ]
        timeout = _timeout(request)
        try:
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
                compress=None,
            )
        except (TimeoutError, aiohttp.ConnectionTimeoutError, aiohttp.ServerTimeoutError) as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise httpx2.ConnectTimeout("timed out connecting", request=request) from exc
            raise httpx2.ReadTimeout(
                "timed out waiting for the response", request=request
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientResponseError as exc:  # a malformed status line or headers
            raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx2.TransportError(str(exc), request=request) from exc
        return httpx2.Response(
            status_code=response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_Body(response, request, timeout.sock_read),
            extensions={
                "http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode()
                if response.version
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1"),
            },
        )

    async def aclose(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
