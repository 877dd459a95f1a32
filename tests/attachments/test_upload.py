import asyncio
import json

import pytest

from attachments.models import Attachment
from chat.models import Conversation
from tests.attachments.conftest import GIF, JPEG, PDF, WEBP, png_bytes, upload

pytestmark = pytest.mark.django_db

PNG = png_bytes()


def post_upload(client, data: bytes | None, name="photo.png", session_id="s-1", **kwargs):
    form = {}
    if data is not None:
        form["file"] = upload(name, data, kwargs.pop("content_type", "image/png"))
    if session_id is not None:
        form["session_id"] = session_id
    return client.post("/api/uploads", form, **kwargs)


def stored_files(location) -> list:
    return [p for p in location.rglob("*") if p.is_file()] if location.exists() else []


def test_png_upload_returns_the_attachment_document(api, user, local_storage):
    response = post_upload(api, PNG, name="../../etc/passwd.png")
    assert response.status_code == 201
    doc = response.json()["attachment"]
    attachment = Attachment.objects.get(public_id=doc["id"])
    assert doc["sessionId"] == "s-1"
    assert doc["mimeType"] == "image/png"
    assert doc["sizeBytes"] == len(PNG)
    assert doc["displayUrl"].startswith(f"/attachments/{doc['id']}/?token=")
    assert doc["deliveryUrl"].startswith(f"/attachments/{doc['id']}/")
    assert doc["uploadedAt"].endswith("Z") and doc["expiresAt"].endswith("Z")
    assert doc["metadata"]["filename"] == "passwd.png"
    assert (doc["metadata"]["width"], doc["metadata"]["height"]) == (2, 3)
    # The stored name is ours; the user's filename is metadata only.
    assert attachment.storage_name == f"u{user.pk}/{doc['id']}.png"
    [stored] = stored_files(local_storage)
    assert stored.read_bytes() == PNG
    assert stored.is_relative_to(local_storage)


@pytest.mark.parametrize(
    ("data", "mime", "declared"),
    [
        (JPEG, "image/jpeg", "text/plain"),
        (GIF, "image/gif", "image/png"),
        (WEBP, "image/webp", "application/octet-stream"),
        (PDF, "application/pdf", "image/png"),
    ],
)
def test_type_is_decided_from_the_bytes_not_the_name(api, data, mime, declared):
    response = post_upload(api, data, name="whatever.txt", content_type=declared)
    assert response.status_code == 201
    assert response.json()["attachment"]["mimeType"] == mime
    assert Attachment.objects.get().mime_type == mime


def test_jpeg_dimensions_are_read_from_the_frame_header(api):
    doc = post_upload(api, JPEG, name="a.jpg").json()["attachment"]
    assert (doc["metadata"]["width"], doc["metadata"]["height"]) == (5, 4)


def test_empty_file_is_a_400(api, local_storage):
    response = post_upload(api, b"", name="empty.png")
    assert response.status_code == 400
    assert response.json() == {"detail": "The file is empty"}
    assert not Attachment.objects.exists() and not stored_files(local_storage)


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
        b"plain text pretending to be a picture",
        b"PK\x03\x04 a zip archive",
        b"\x89PNG but not really",
    ],
    ids=["svg", "html", "text", "zip", "truncated-png"],
)
def test_other_types_renamed_png_are_a_415(api, data, local_storage):
    response = post_upload(api, data, name="innocent.png", content_type="image/png")
    assert response.status_code == 415
    assert "Unsupported file type" in response.json()["detail"]
    assert not Attachment.objects.exists() and not stored_files(local_storage)


@pytest.mark.parametrize(
    "payload",
    [b"<script>alert(document.cookie)</script>", b"<SVG onload=alert(1)>", b"<html><body>"],
)
def test_image_polyglots_carrying_markup_are_a_415(api, payload, local_storage):
    # A valid GIF header followed by markup, the classic GIF/HTML polyglot (with padding so the
    # markup crosses the scanner's chunk boundary too).
    polyglot = GIF[:-1] + b"\x00" * (1024 * 1024 - 3) + payload + b";"
    response = post_upload(api, polyglot, name="cat.gif")
    assert response.status_code == 415
    assert "markup" in response.json()["detail"]
    assert not stored_files(local_storage)


def test_file_over_the_limit_is_a_413_and_nothing_is_stored(api, settings, local_storage):
    settings.ATTACHMENTS_MAX_SIZE_BYTES = 1000
    response = post_upload(api, PNG + b"\x00" * 2000)
    assert response.status_code == 413
    assert response.json()["detail"] == "File too large (the limit is 1000 bytes)"
    assert not Attachment.objects.exists() and not stored_files(local_storage)


def test_file_exactly_at_the_limit_is_accepted(api, settings):
    data = PNG + b"\x00" * 100
    settings.ATTACHMENTS_MAX_SIZE_BYTES = len(data)
    assert post_upload(api, data).status_code == 201


def test_declared_body_far_over_the_limit_is_refused_without_parsing(api, settings):
    settings.ATTACHMENTS_MAX_SIZE_BYTES = 1000
    response = post_upload(api, PNG + b"\x00" * 200_000)
    assert response.status_code == 413
    assert not Attachment.objects.exists()


def test_size_limit_handler_stops_reading_past_the_limit(rf, settings):
    """The upload handler aborts the parse at the limit: the file never reaches FILES."""
    from django.core.files.uploadhandler import StopUpload

    from attachments.uploads import SizeLimitUploadHandler

    settings.ATTACHMENTS_MAX_SIZE_BYTES = 100
    request = rf.post("/api/uploads")
    handler = SizeLimitUploadHandler(request)
    assert handler.receive_data_chunk(b"x" * 60, 0) == b"x" * 60
    with pytest.raises(StopUpload):
        handler.receive_data_chunk(b"x" * 60, 60)
    assert request._attachment_too_large is True


def test_missing_fields_are_422(api):
    assert post_upload(api, None).status_code == 422
    assert post_upload(api, PNG, session_id=None).status_code == 422
    assert post_upload(api, PNG, session_id="bad id with spaces").status_code == 422


def test_unknown_session_id_creates_the_users_conversation(api, user):
    response = post_upload(api, PNG, session_id="new-chat-42")
    assert response.status_code == 201
    conversation = Conversation.objects.get(session_id="new-chat-42")
    assert conversation.user == user
    assert Attachment.objects.get().conversation == conversation


def test_another_users_session_is_a_404_and_nothing_is_stored(api, other_user, local_storage):
    Conversation.objects.create(user=other_user, session_id="theirs")
    response = post_upload(api, PNG, session_id="theirs")
    assert response.status_code == 404
    assert not Attachment.objects.exists() and not stored_files(local_storage)


def test_upload_needs_authentication(client):
    response = post_upload(client, PNG)
    assert response.status_code == 401


def test_browser_session_upload_needs_the_csrf_token(staff_browser):
    refused = post_upload(staff_browser, PNG)
    assert refused.status_code == 403
    staff_browser.get("/login/")
    token = staff_browser.cookies["csrftoken"].value
    accepted = post_upload(staff_browser, PNG, headers={"X-CSRFToken": token})
    assert accepted.status_code == 201


def test_openapi_documents_the_upload_route(api):
    schema = api.get("/api/openapi.json").json()
    operation = schema["paths"]["/api/uploads"]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["required"]) == {"file", "session_id"}
    assert {"201", "400", "404", "413", "415"} <= set(operation["responses"])


# The ASGI guard: the real application, driven the way an ASGI server drives it. ------------


async def call_asgi(headers: list[tuple[bytes, bytes]], chunks: list[bytes]):
    from config.asgi import application

    sent: list[dict] = []
    pending = list(chunks)
    reads = 0

    async def receive():
        nonlocal reads
        reads += 1
        if not pending:
            await asyncio.sleep(3600)
        body = pending.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/uploads",
        "raw_path": b"/api/uploads",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    await asyncio.wait_for(application(scope, receive, send), 10)
    return sent, reads


async def test_asgi_guard_refuses_a_declared_oversized_body_before_reading_it(settings):
    settings.ATTACHMENTS_MAX_SIZE_BYTES = 1000
    sent, reads = await call_asgi(
        [(b"content-length", b"10000000"), (b"content-type", b"multipart/form-data; boundary=x")],
        [b"x" * 1000] * 10_000,
    )
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["detail"].startswith("File too large")
    assert reads == 0


async def test_asgi_guard_stops_reading_an_undeclared_body_past_the_limit(settings):
    settings.ATTACHMENTS_MAX_SIZE_BYTES = 1000
    chunk = b"x" * 16 * 1024
    sent, reads = await call_asgi(
        [(b"content-type", b"multipart/form-data; boundary=x")], [chunk] * 1000
    )
    assert sent[0]["status"] == 413
    # 64 KiB of multipart allowance over a 1000-byte limit: five 16 KiB chunks, not a thousand.
    assert reads <= 6


def test_large_upload_spooled_to_disk_is_stored_intact(api, local_storage, settings):
    # Past FILE_UPLOAD_MAX_MEMORY_SIZE Django spools to a temporary file; the limit still holds.
    data = PNG + bytes(range(256)) * (3 * 1024 * 1024 // 256)
    assert len(data) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    response = post_upload(api, data)
    assert response.status_code == 201
    [stored] = stored_files(local_storage)
    assert stored.read_bytes() == data
    assert Attachment.objects.get().size_bytes == len(data)


def test_get_returns_a_freshly_signed_document_and_another_user_gets_404(api, other_user, client):
    from chat.services import create_api_token

    doc = post_upload(api, PNG).json()["attachment"]
    again = api.get(f"/api/uploads/{doc['id']}")
    assert again.status_code == 200
    assert again.json()["attachment"]["id"] == doc["id"]
    assert api.get(again.json()["attachment"]["displayUrl"]).status_code == 200
    intruder = {"Authorization": f"Bearer {create_api_token(other_user)}"}
    assert client.get(f"/api/uploads/{doc['id']}", headers=intruder).status_code == 404
    assert client.delete(f"/api/uploads/{doc['id']}", headers=intruder).status_code == 404
    assert Attachment.objects.filter(public_id=doc["id"]).exists()


def test_delete_removes_the_file_before_it_is_sent(api, local_storage):
    doc = post_upload(api, PNG).json()["attachment"]
    assert api.delete(f"/api/uploads/{doc['id']}").status_code == 204
    assert not Attachment.objects.exists() and not stored_files(local_storage)
    assert api.delete(f"/api/uploads/{doc['id']}").status_code == 404
