"""The transport under the app's outbound HTTP client (integrations/aiohttp_transport.py), through
httpx2's API, against real servers on 127.0.0.1: plain and TLS, slow, closing, refusing,
redirecting, compressed and large answers."""

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from integrations.aiohttp_transport import AiohttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0]


def client(**kwargs) -> httpx2.AsyncClient:
    limits = httpx2.Limits(max_connections=10, max_keepalive_connections=5)
    return httpx2.AsyncClient(
        transport=AiohttpTransport(limits, verify=kwargs.pop("verify", True)),
        trust_env=False,
        **kwargs,
    )


async def serve(handler: Handler, ssl_context: ssl.SSLContext | None = None):
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def test_a_streamed_answer_arrives_chunk_by_chunk_and_the_connection_is_reused():
    connections = 0
    release = asyncio.Event()

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for word in (b"one ", b"two "):
                writer.write(b"%x\r\n%s\r\n" % (len(word), word))
                await writer.drain()
                await release.wait()  # the client must see "one " before "two " is sent
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server, client() as http:
        for _ in range(2):
            release.clear()
            seen = []
            async with http.stream("GET", f"http://127.0.0.1:{port}/") as response:
                async for chunk in response.aiter_bytes():
                    seen.append(chunk)
                    release.set()
            assert b"".join(seen) == b"one two "
            assert seen[0] == b"one ", "the first chunk arrives before the second is sent"
    assert connections == 1, "the keep-alive connection is reused"


async def test_a_server_that_stops_sending_raises_a_read_timeout():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # silent until the client gives up and closes
        writer.close()

    server, port = await serve(handler)
    url = f"http://127.0.0.1:{port}/"
    async with (
        server,
        client(timeout=httpx2.Timeout(5.0, read=0.2)) as http,
        http.stream("GET", url) as response,
    ):
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"hello"
        with pytest.raises(httpx2.ReadTimeout):
            await anext(chunks)


async def test_a_stall_is_timed_from_the_last_chunk_received():
    """Chunks a third of a read timeout apart for over two and a half read timeouts: no
    timeout, as each chunk restarts the wait; then a stall: the timeout, no sooner than one
    read timeout after the last chunk."""
    read_timeout = 0.3

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(8):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(read_timeout / 3)
        await reader.read()  # then silent until the client gives up and closes
        writer.close()

    server, port = await serve(handler)
    loop = asyncio.get_running_loop()
    async with (
        server,
        client(timeout=httpx2.Timeout(5.0, read=read_timeout)) as http,
        http.stream("GET", f"http://127.0.0.1:{port}/") as response,
    ):
        received = b""
        last = loop.time()
        with pytest.raises(httpx2.ReadTimeout):
            async for chunk in response.aiter_bytes():
                received += chunk
                last = loop.time()
        assert loop.time() - last >= read_timeout
    assert received == b"x" * 8


async def test_a_dropped_connection_mid_answer_is_a_transport_error():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.transport.abort()

    server, port = await serve(handler)
    async with server, client() as http:
        with pytest.raises((httpx2.ReadError, httpx2.RemoteProtocolError)):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_a_refused_connection_is_a_connect_error():
    async def never(reader, writer):
        writer.close()

    server, port = await serve(never)  # a port that was just free
    server.close()
    await server.wait_closed()
    async with client() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_an_idle_connection_the_server_closed_is_replaced():
    connections = 0

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        await read_request(reader)
        # Keep-alive by HTTP's rules, then the server closes the idle connection anyway.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server, client() as http:
        first = await http.get(f"http://127.0.0.1:{port}/")
        await asyncio.sleep(0.1)  # the close reaches the client's idle connection
        second = await http.get(f"http://127.0.0.1:{port}/")
    assert (first.text, second.text) == ("ok", "ok")
    assert connections == 2


async def test_a_large_answer_read_slowly_arrives_whole():
    body = bytes(range(256)) * 8192  # 2 MiB: more than the transport buffers before pausing

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    url = f"http://127.0.0.1:{port}/"
    async with server, client() as http, http.stream("GET", url) as response:
        await asyncio.sleep(0.3)  # let the socket fill the buffer past its high-water mark
        received = b"".join([chunk async for chunk in response.aiter_raw()])
    assert received == body


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def tls(tmp_path):
    cert, key = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    return server_side, trusting


async def test_https_is_verified_and_streams(tls):
    server_side, trusting = tls

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
        await writer.drain()
        writer.close()

    server, port = await serve(handler, server_side)
    async with server:
        async with client(verify=trusting) as http:
            response = await http.get(f"https://localhost:{port}/")
            assert response.text == "secure"
        # A certificate the client does not trust fails the handshake: no request is sent.
        async with client() as http:
            with pytest.raises(httpx2.ConnectError):
                await http.get(f"https://localhost:{port}/")


async def test_a_server_silent_before_its_headers_raises_a_read_timeout():
    async def handler(reader, writer):
        await read_request(reader)
        await reader.read()
        writer.close()

    server, port = await serve(handler)
    async with server, client(timeout=httpx2.Timeout(5.0, read=0.2)) as http:
        with pytest.raises(httpx2.ReadTimeout):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_a_reused_connection_still_times_the_wait_for_headers():
    """A streamed body's reads are timed by the transport's own watch, which turns aiohttp's
    per-chunk timer off for that body: the next request on the same connection has it back."""
    connections = 0

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"2\r\nok\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader)  # the second request, on the same connection: no answer
        await reader.read()
        writer.close()

    server, port = await serve(handler)
    url = f"http://127.0.0.1:{port}/"
    async with server, client(timeout=httpx2.Timeout(5.0, read=0.2)) as http:
        async with http.stream("GET", url) as response:
            assert [chunk async for chunk in response.aiter_bytes()] == [b"ok"]
        with pytest.raises(httpx2.ReadTimeout):
            await http.get(url)
    assert connections == 1


async def test_the_request_goes_out_as_httpx2_built_it_and_redirects_are_not_followed():
    seen: list[bytes] = []

    async def handler(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(
            (line.split(b":")[1] for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length")), b"0"
        ))  # fmt: skip
        seen.append(head + await reader.readexactly(length))
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: http://example.com/\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server, client(headers={"User-Agent": "chat-app"}) as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/v1?q=1",
            json={"a": 1},
            headers={"Authorization": "Bearer secret"},
        )
    assert response.status_code == 302, "a redirect is returned, not followed"
    request = seen[0]
    assert request.startswith(b"POST /v1?q=1 HTTP/1.1\r\n")
    headers = request.split(b"\r\n\r\n")[0].lower()
    assert b"authorization: bearer secret" in headers
    assert b"user-agent: chat-app" in headers and b"aiohttp" not in headers
    assert b"content-type: application/json" in headers
    assert request.endswith(b'{"a":1}') or request.endswith(b'{"a": 1}')
    assert len(seen) == 1


async def test_a_compressed_answer_is_decoded_once():
    import gzip

    body = gzip.compress(b"plain text")

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        writer.write(body)
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server, client() as http:
        response = await http.get(f"http://127.0.0.1:{port}/")
    assert response.text == "plain text"


async def test_a_response_closed_before_its_end_closes_its_connection():
    """Cancelling a turn closes the upstream request: the server sees the connection go."""
    closed = asyncio.Event()
    connections = 0

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        await reader.read()  # returns when the client closes the connection
        closed.set()
        writer.close()

    server, port = await serve(handler)
    async with server, client() as http:
        async with http.stream("GET", f"http://127.0.0.1:{port}/") as response:
            async for _ in response.aiter_bytes():
                break
        await asyncio.wait_for(closed.wait(), 5)
    assert connections == 1


def test_the_session_is_closed_when_its_event_loop_ends():
    transport = AiohttpTransport(httpx2.Limits(max_connections=5))

    async def use() -> None:
        transport._get_session()

    asyncio.run(use())
    assert transport._session is not None and transport._session.closed
