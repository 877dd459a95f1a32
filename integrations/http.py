"""The one place outbound HTTP leaves the application.

Every remote call goes through a client made here: timeouts on every request, keep-alive
connections shared across turns, no redirects followed (API servers do not need them, and a
redirect could carry credentials to another origin or into the private network).
"""

import asyncio
import weakref
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    import httpx2

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=30.0, pool=10.0)
_LIMITS = httpx.Limits(max_connections=500, max_keepalive_connections=100, keepalive_expiry=60)

# One client per event loop: a client's connection pool is bound to the loop it was made on.
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]" = (
    weakref.WeakKeyDictionary()
)


def async_client() -> httpx.AsyncClient:
    """Return the shared keep-alive client of the running event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            timeout=DEFAULT_TIMEOUT,
            limits=_LIMITS,
            follow_redirects=False,
            trust_env=False,
        )
        _clients[loop] = client
    return client


async def close_clients() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()


def mcp_http_client(
    headers: dict[str, str] | None = None,
    timeout: "httpx2.Timeout | None" = None,
    auth: "httpx2.Auth | None" = None,
) -> "httpx2.AsyncClient":
    """An httpx2 client for one MCP server (the `mcp` SDK speaks httpx2, not httpx).

    Each MCP connection owns its client (the SDK closes it with the session), with that server's
    headers; no redirects and no proxy environment, as for every other outbound call.
    """
    import httpx2

    return httpx2.AsyncClient(
        headers=headers or {},
        timeout=timeout or httpx2.Timeout(30.0, read=300.0),
        auth=auth,
        follow_redirects=False,
        trust_env=False,
    )
