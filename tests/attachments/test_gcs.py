"""The GCS path against a real gcp-storage-emulator (started by the conftest)."""

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from asgiref.sync import sync_to_async
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from attachments import services
from attachments.models import Attachment
from tests.attachments.conftest import BUCKET, PDF, png_bytes
from tests.sse import read_stream

PNG = png_bytes()


def bucket(emulator_url: str):
    return gcs.Client(project="chat-test", credentials=AnonymousCredentials()).bucket(BUCKET)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.mark.django_db
def test_upload_stores_a_private_object_with_a_v4_signed_delivery_url(
    api, user, gcs_storage, gcs_emulator, settings
):
    response = api.post("/api/uploads", {"file": _file(PNG), "session_id": "g-1"})
    assert response.status_code == 201
    doc = response.json()["attachment"]
    attachment = Attachment.objects.get(public_id=doc["id"])
    blob = bucket(gcs_emulator).get_blob(attachment.storage_name)
    assert blob is not None and blob.download_as_bytes() == PNG
    assert blob.content_type == "image/png"

    delivery = doc["deliveryUrl"]
    assert delivery.startswith(f"{gcs_emulator}/{BUCKET}/u{user.pk}/{doc['id']}.png?")
    params = query(delivery)
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert params["X-Goog-Expires"] == str(settings.ATTACHMENTS_URL_EXPIRY_SECONDS)
    assert params["X-Goog-Credential"].startswith("attachments@chat-test.iam")
    assert httpx.get(delivery).content == PNG
    # The page's URL stays on our origin (strict CSP) and streams the object from the bucket.
    shown = api.get(doc["displayUrl"])
    assert shown.status_code == 200 and shown.getvalue() == PNG


@pytest.mark.django_db(transaction=True)
async def test_urls_are_signed_afresh_when_sent_to_the_model(
    aapi, user, gcs_storage, fake_openrouter, settings
):
    image = await sync_to_async(services.attach_file)(user, "g-2", _file(PNG))
    pdf = await sync_to_async(services.attach_file)(user, "g-2", _file(PDF, "spec.pdf"))
    first_doc = await sync_to_async(services.attachment_document)(image)
    # Links handed out earlier expire; the model must get new ones, never a stored URL.
    settings.ATTACHMENTS_URL_EXPIRY_SECONDS = 120
    response = await aapi.post(
        "/api/chat/stream",
        {
            "session_id": "g-2",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": first_doc["deliveryUrl"]}},
                        {"type": "attachment", "attachment_id": pdf.public_id},
                    ],
                }
            ],
        },
        content_type="application/json",
    )
    await read_stream(response)
    body = fake_openrouter.requests[-1]["body"]
    image_part, file_part = next(m for m in body["messages"] if m["role"] == "user")["content"]
    sent = image_part["image_url"]["url"]
    assert query(sent)["X-Goog-Expires"] == "120"
    assert query(first_doc["deliveryUrl"])["X-Goog-Expires"] == "3600"
    async with httpx.AsyncClient() as client:
        assert (await client.get(sent)).content == PNG
        # On GCS the provider fetches the PDF itself, from a signed URL as well.
        assert file_part["file"]["filename"] == "spec.pdf"
        assert (await client.get(file_part["file"]["file_data"])).content == PDF


@pytest.mark.django_db
def test_deleting_the_conversation_deletes_its_objects(api, user, gcs_storage, gcs_emulator):
    attachment = services.attach_file(user, "g-3", _file(PNG))
    assert bucket(gcs_emulator).get_blob(attachment.storage_name) is not None
    assert api.delete("/api/chat/session/g-3").status_code == 204
    assert bucket(gcs_emulator).get_blob(attachment.storage_name) is None
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_cleanup_removes_expired_objects_from_the_bucket(user, gcs_storage, gcs_emulator):
    from datetime import timedelta

    from django.utils import timezone

    old = services.attach_file(user, "g-4", _file(PNG))
    fresh = services.attach_file(user, "g-4", _file(PNG))
    Attachment.objects.filter(pk=old.pk).update(last_used_at=timezone.now() - timedelta(days=8))
    report = services.cleanup_attachments()
    assert [a.public_id for a in report.removed] == [old.public_id]
    assert bucket(gcs_emulator).get_blob(old.storage_name) is None
    assert bucket(gcs_emulator).get_blob(fresh.storage_name) is not None


def _file(data: bytes, name: str = "photo.png"):
    from tests.attachments.conftest import upload

    return upload(name, data)
