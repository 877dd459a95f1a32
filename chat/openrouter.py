"""The OpenRouter client: the only code that talks to the model API.

Any OpenAI-compatible server works (OPENROUTER_BASE_URL), e.g. a local llama.cpp or Ollama.
"""

import asyncio
import codecs
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

import httpx2
import orjson
from django.conf import settings

from integrations.http import async_client

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """The model API failed. `status` is what an HTTP API should answer with (502/504/...)."""

    def __init__(
        self,
        message: str,
        status: int = 502,
        retry_after: str | None = None,
        upstream_status: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        # The model API's own status code, when it answered (e.g. 400 for "no tool support").
        self.upstream_status = upstream_status


class NotConfigured(UpstreamError):
    def __init__(self) -> None:
        super().__init__(
            "Chat needs an OpenRouter API key: set OPENROUTER_API_KEY and restart.", status=503
        )


def _headers() -> dict[str, str]:
    if not settings.OPENROUTER_API_KEY:
        raise NotConfigured()
    headers = {
        "Authorization": f"Bearer {settings.OPENROUTER_API_KEY}",
        "X-Title": settings.OPENROUTER_APP_NAME,
    }
    if settings.OPENROUTER_APP_URL:
        headers["HTTP-Referer"] = settings.OPENROUTER_APP_URL
    return headers


def _timeout(read: float | None = None) -> httpx2.Timeout:
    return httpx2.Timeout(
        connect=settings.OPENROUTER_CONNECT_TIMEOUT,
        read=read or settings.OPENROUTER_READ_TIMEOUT,
        write=30.0,
        pool=settings.OPENROUTER_CONNECT_TIMEOUT,
    )


def _error_from_response(response: httpx2.Response) -> UpstreamError:
    detail = ""
    try:
        payload = response.json()
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        detail = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    except ValueError:
        detail = response.text[:300]
    code = response.status_code
    if code == 401:
        message = "OpenRouter rejected the API key (401)"
    elif code == 402:
        message = "OpenRouter says the account is out of credits (402)"
    elif code == 429:
        retry = response.headers.get("Retry-After")
        message = "Rate limited by the model provider (429)" + (
            f"; retry after {retry} s" if retry else ""
        )
        return UpstreamError(_join(message, detail), status=429, retry_after=retry)
    else:
        message = f"The model API answered {code}"
    status = 404 if code == 404 else 502
    return UpstreamError(_join(message, detail), status=status, upstream_status=code)


def _join(message: str, detail: str) -> str:
    return f"{message}: {detail}" if detail else message


def _transport_error(exc: httpx2.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx2.ReadTimeout):
        return UpstreamError(
            f"The model stopped sending data for {settings.OPENROUTER_READ_TIMEOUT:g} s "
            "(timed out)",
            status=504,
        )
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamError("Timed out reaching the model API", status=504)
    if isinstance(exc, httpx2.ConnectError):
        return UpstreamError("Could not reach the model API")
    return UpstreamError("The connection to the model API dropped mid-stream")


async def _data_lines(response: httpx2.Response) -> AsyncGenerator[str]:
    """The `data:` lines of an event stream, decoded as UTF-8 across chunk boundaries.

    Splitting the bytes here costs a third of what httpx's line iterator does per chunk (it
    stacks three generators: text, decoded bytes, raw bytes); comments and blank separators are
    dropped."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    # An uncompressed body (what event streams are) is read as it arrives, without httpx2's
    # decoding and re-chunking layer in between.
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    body = response.aiter_bytes() if encoded else response.aiter_raw()
    async with contextlib.aclosing(body) as chunks:
        async for raw in chunks:
            pending += decoder.decode(raw)
            if "\n" not in pending:
                continue
            *lines, pending = pending.split("\n")
            for line in lines:
                if line.startswith("data:"):
                    yield line.rstrip("\r")
    pending += decoder.decode(b"", final=True)
    if pending.startswith("data:"):
        yield pending.rstrip("\r")


async def _drain(lines: AsyncGenerator[str]) -> None:
    """Read the stream to its end after `[DONE]`: a response read to the end leaves its
    keep-alive connection in the pool for the next request (closing it early closes the
    connection). A server that keeps the stream open after `[DONE]` gets a second."""
    try:
        async with asyncio.timeout(1.0):
            async for _ in lines:
                pass
    except (TimeoutError, httpx2.HTTPError):
        pass


def _parse_chunk(data: str) -> Any:
    """A chunk's JSON. orjson parses one in a third of the time of the standard library; what it
    refuses and the standard library takes (a lone UTF-16 surrogate escape, NaN) is parsed as
    before, so only JSON neither accepts is malformed."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


async def stream_chat(body: dict[str, Any]) -> AsyncGenerator[tuple[str, dict[str, Any]]]:
    """Stream a chat completion, yielding (raw data line, parsed chunk) per upstream chunk.

    Comment lines (`: OPENROUTER PROCESSING`) are skipped. A non-200 answer, a malformed chunk,
    an in-band error, a stall past the read timeout or a dropped connection raise UpstreamError.
    Closing the generator closes the upstream request.
    """
    url = f"{settings.OPENROUTER_BASE_URL}/chat/completions"
    headers = _headers()
    try:
        async with async_client().stream(
            "POST", url, json=body, headers=headers, timeout=_timeout()
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise _error_from_response(response)
            finished = False
            # Closed here, not by the garbage collector, whichever way the loop ends.
            async with contextlib.aclosing(_data_lines(response)) as lines:
                async for line in lines:
                    data = line[5:].strip()
                    if data == "[DONE]":
                        await _drain(lines)
                        return
                    try:
                        chunk = _parse_chunk(data)
                    except ValueError:
                        raise UpstreamError("The model API sent a malformed chunk") from None
                    if not isinstance(chunk, dict):
                        raise UpstreamError("The model API sent a malformed chunk")
                    error = chunk.get("error")
                    if error:
                        message = error.get("message") if isinstance(error, dict) else str(error)
                        raise UpstreamError(f"The model provider reported an error: {message}")
                    if any(c.get("finish_reason") for c in chunk.get("choices") or []):
                        finished = True
                    yield data, chunk
            if not finished:
                raise UpstreamError("The connection to the model API dropped mid-stream")
    except httpx2.HTTPError as exc:
        raise _transport_error(exc) from None


async def get_json(path: str, params: dict[str, str] | None = None) -> Any:
    """GET a JSON document from the model API (models, generation stats)."""
    url = f"{settings.OPENROUTER_BASE_URL}{path}"
    try:
        response = await async_client().get(
            url, params=params, headers=_headers(), timeout=_timeout(read=30.0)
        )
    except httpx2.HTTPError as exc:
        raise _transport_error(exc) from None
    if response.status_code != 200:
        raise _error_from_response(response)
    try:
        return response.json()
    except ValueError:
        raise UpstreamError("The model API sent malformed JSON") from None


async def complete(body: dict[str, Any], read_timeout: float | None = None) -> dict[str, Any]:
    """A non-streaming chat completion (the tool planner): the parsed response document."""
    url = f"{settings.OPENROUTER_BASE_URL}/chat/completions"
    try:
        response = await async_client().post(
            url,
            json={**body, "stream": False},
            headers=_headers(),
            timeout=_timeout(read=read_timeout),
        )
    except httpx2.HTTPError as exc:
        raise _transport_error(exc) from None
    if response.status_code != 200:
        raise _error_from_response(response)
    try:
        payload = response.json()
    except ValueError:
        raise UpstreamError("The model API sent malformed JSON") from None
    if not isinstance(payload, dict) or payload.get("error"):
        raise UpstreamError("The model provider reported an error")
    return payload
