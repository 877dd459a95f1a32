"""Receiving uploads: the size limit, enforced while the body is read, and type sniffing.

Two layers keep an oversized upload from ever being stored:
- `UploadSizeGuard` (ASGI) answers 413 from the Content-Length header before reading the body,
  and stops reading a body (chunked or lying) as soon as it passes the limit.
- `SizeLimitUploadHandler` (Django upload handler) counts each file's bytes as the multipart
  body is parsed and stops the parse past the limit, so nothing past it is kept.
"""

import json
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

UPLOAD_PATH = "/api/uploads"
# Multipart framing and the small form fields that travel with the file.
MULTIPART_OVERHEAD = 64 * 1024


def is_too_large(request) -> bool:
    """Whether the upload handler refused this request's body as too large."""
    return getattr(request, "_attachment_too_large", False)


class SizeLimitUploadHandler(FileUploadHandler):
    """Abort the multipart parse once a file (or the declared body) passes the size limit."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length > settings.ATTACHMENTS_MAX_SIZE_BYTES + MULTIPART_OVERHEAD:
            self._refuse()
            from django.http import QueryDict
            from django.utils.datastructures import MultiValueDict

            # Returning a result skips the parse entirely: nothing of the body is stored.
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > settings.ATTACHMENTS_MAX_SIZE_BYTES:
            self._refuse()
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int):
        return None

    def _refuse(self) -> None:
        if self.request is not None:
            self.request._attachment_too_large = True  # type: ignore[attr-defined]


def too_large_detail() -> str:
    from django.template.defaultfilters import filesizeformat

    limit = filesizeformat(settings.ATTACHMENTS_MAX_SIZE_BYTES).replace("\xa0", " ")
    return f"File too large (the limit is {limit})"


def _too_large_body() -> bytes:
    return json.dumps({"detail": too_large_detail()}).encode()


class UploadSizeGuard:
    """ASGI middleware for the upload route: refuse an oversized body while it arrives."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].rstrip("/") != UPLOAD_PATH:
            return await self.app(scope, receive, send)
        limit = settings.ATTACHMENTS_MAX_SIZE_BYTES + MULTIPART_OVERHEAD
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(send)
        received = 0
        exceeded = False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django treats a disconnect as an aborted request and answers nothing,
                    # so the 413 is sent from here once it returns.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counting_receive, send)
        if exceeded:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = _too_large_body()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# Type sniffing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sniffed:
    mime_type: str
    extension: str
    kind: str  # "image" or "pdf"
    width: int | None = None
    height: int | None = None


# Markup that makes a file renderable as HTML/SVG by a careless consumer: refused in images.
_MARKUP = (b"<script", b"<svg", b"<html", b"<!doctype", b"<iframe", b"<body", b"<?xml")
_SCAN_CHUNK = 1024 * 1024


def _dimensions(head: bytes, mime: str) -> tuple[int | None, int | None]:
    if mime == "image/png" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if mime == "image/gif" and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if mime == "image/jpeg":
        return _jpeg_dimensions(head)
    return None, None


def _jpeg_dimensions(data: bytes) -> tuple[int | None, int | None]:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None, None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        # SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(
                data[i + 5 : i + 7], "big"
            )
        i += 2 + length
    return None, None


def sniff_type(head: bytes) -> Sniffed | None:
    """The allowed type these first bytes prove, or None. Never the declared type."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        mime, ext, kind = "image/png", "png", "image"
    elif head.startswith(b"\xff\xd8\xff"):
        mime, ext, kind = "image/jpeg", "jpg", "image"
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        mime, ext, kind = "image/gif", "gif", "image"
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        mime, ext, kind = "image/webp", "webp", "image"
    elif head.startswith(b"%PDF-"):
        return Sniffed("application/pdf", "pdf", "pdf")
    else:
        return None
    width, height = _dimensions(head, mime)
    return Sniffed(mime, ext, kind, width, height)


def contains_markup(stream: IO[bytes]) -> bool:
    """Whether an image carries HTML/SVG markup anywhere (a polyglot)."""
    stream.seek(0)
    tail = b""
    longest = max(len(m) for m in _MARKUP)
    while chunk := stream.read(_SCAN_CHUNK):
        window = (tail + chunk).lower()
        if any(marker in window for marker in _MARKUP):
            return True
        tail = window[-longest:]
    stream.seek(0)
    return False
