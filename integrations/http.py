"""The one place outbound HTTP leaves the application.

Every remote call goes through a client made here: timeouts on every request, keep-alive
connections shared across turns, no redirects followed (API servers do not need them, and a
redirect could carry credentials to another origin or into the private network).
"""

import asyncio
import weakref

import httpx2

from integrations.aiohttp_transport import AiohttpTransport

DEFAULT_TIMEOUT = httpx2.Timeout(connect=10.0, read=60.0, write=30.0, pool=10.0)
_LIMITS = httpx2.Limits(max_connections=500, max_keepalive_connections=100, keepalive_expiry=60)

# One client per event loop: a client's connection pool is bound to the loop it was made on.
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient]" = (
    weakref.WeakKeyDictionary()
)


def async_client() -> httpx2.AsyncClient:
    """Return the shared keep-alive client of the running event loop.

    httpx2's API (the maintained successor of httpx, which the `mcp` SDK uses too) over an
    aiohttp transport (integrations/aiohttp_transport.py): its connections are parsed in C,
    and its session closes with the event loop, so there is nothing to close by hand."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx2.AsyncClient(
            transport=AiohttpTransport(_LIMITS),
            timeout=DEFAULT_TIMEOUT,
            follow_redirects=False,
            trust_env=False,
        )
        _clients[loop] = client
    return client


def mcp_http_client(
    headers: dict[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """An httpx2 client for one MCP server (the `mcp` SDK speaks httpx2, not httpx).

    Each MCP connection owns its client (the SDK closes it with the session), with that server's
    headers; no redirects and no proxy environment, as for every other outbound call.
    """
    return httpx2.AsyncClient(
        headers=headers or {},
        timeout=timeout or httpx2.Timeout(30.0, read=300.0),
        auth=auth,
        follow_redirects=False,
        trust_env=False,
    )
