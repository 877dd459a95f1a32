"""chat.openrouter.stream_chat against a real server on 127.0.0.1: how the event stream's bytes
are read (as they arrive when plain, decoded when the server compressed them)."""

import asyncio
import gzip
import json

import pytest

from chat import openrouter

CHUNKS = [
    {"choices": [{"index": 0, "delta": {"content": "Grüße "}}]},
    {"choices": [{"index": 0, "delta": {"content": "aus Köln"}, "finish_reason": "stop"}]},
]


def event_stream() -> bytes:
    lines = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in CHUNKS]
    return ("".join(lines) + ": comment\n\ndata: [DONE]\n\n").encode()


async def serve(body: bytes, encoding: str | None):
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        if encoding:
            head += b"Content-Encoding: %s\r\n" % encoding.encode()
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body))
        # In two writes, split inside a multi-byte character of the plain stream.
        writer.write(body[:9])
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(body[9:])
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handler, "127.0.0.1", 0)


@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_the_stream_is_read_plain_or_compressed(settings, encoding):
    body = event_stream()
    server = await serve(gzip.compress(body) if encoding else body, encoding)
    port = server.sockets[0].getsockname()[1]
    settings.OPENROUTER_BASE_URL = f"http://127.0.0.1:{port}"
    settings.OPENROUTER_API_KEY = "sk-test"
    async with server:
        received = [chunk async for _, chunk in openrouter.stream_chat({"model": "m"})]
    assert received == CHUNKS


@pytest.mark.parametrize(
    "data",
    [
        '{"choices": [{"delta": {"content": "caf\\u00e9 \\ud83d\\ude00"}}]}',
        # Taken by the standard library, refused by orjson: parsed as before.
        '{"choices": [{"delta": {"content": "half an emoji \\ud83d"}}]}',
        '{"choices": [], "cost": NaN}',
    ],
)
def test_chunks_parse_as_the_standard_library_parses_them(data):
    parsed = openrouter._parse_chunk(data)
    assert json.dumps(parsed) == json.dumps(json.loads(data))


@pytest.mark.parametrize("data", ['{"choices": [', "{'single': 'quotes'}", ""])
def test_json_neither_parser_takes_is_refused(data):
    with pytest.raises(ValueError):
        openrouter._parse_chunk(data)
