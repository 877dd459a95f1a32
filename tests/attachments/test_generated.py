"""Files the server produces (images MCP tools return) go through the uploads' checks and
storage: `attach_generated_image`."""

import pytest

from attachments import services
from attachments.models import Attachment
from chat.models import Conversation
from tests.attachments.conftest import GIF, JPEG, PDF, WEBP, png_bytes
from tests.attachments.test_gcs import bucket

PNG = png_bytes()
pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(user) -> Conversation:
    return Conversation.objects.create(user=user, session_id="gen-1")


@pytest.mark.parametrize(
    ("data", "mime", "name"),
    [
        (PNG, "image/png", "tool-1.png"),
        (JPEG, "image/jpeg", "tool-1.jpg"),
        (GIF, "image/gif", "tool-1.gif"),
        (WEBP, "image/webp", "tool-1.webp"),
    ],
)
def test_an_image_is_stored_for_the_conversations_owner(
    conversation, user, local_storage, data, mime, name
):
    attachment = services.attach_generated_image(conversation, data, "tool-1")

    assert attachment.user == user and attachment.conversation == conversation
    assert attachment.mime_type == mime and attachment.kind == "image"
    assert attachment.original_name == name and attachment.message is None
    assert (local_storage / attachment.storage_name).read_bytes() == data
    assert attachment.storage_name.startswith(f"u{user.pk}/{attachment.public_id}.")
    assert services.get_attachment_for_user(user, attachment.public_id) == attachment


@pytest.mark.parametrize(
    ("data", "status", "detail"),
    [
        (b"", 400, "The file is empty"),
        (PDF, 415, "Unsupported file type: only PNG, JPEG, WebP and GIF images"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "Unsupported file type: only PNG"),
        (GIF[:-1] + b"<svg onload=alert(1)>;", 415, "contains HTML or SVG markup"),
        (PNG + b"\x00" * 100, 413, "File too large"),
    ],
    ids=["empty", "pdf", "svg", "polyglot", "too-large"],
)
def test_bytes_an_upload_would_be_refused_for_are_refused(
    conversation, local_storage, settings, data, status, detail
):
    settings.ATTACHMENTS_MAX_SIZE_BYTES = len(PNG) + 50
    with pytest.raises(services.UploadRefused) as refused:
        services.attach_generated_image(conversation, data, "tool-1")

    assert refused.value.status == status and detail in refused.value.detail
    assert not Attachment.objects.exists()
    assert not local_storage.exists() or not any(local_storage.rglob("*.*"))


def test_on_gcs_the_image_goes_to_the_private_bucket(conversation, gcs_storage, gcs_emulator):
    attachment = services.attach_generated_image(conversation, PNG, "tool-1")

    blob = bucket(gcs_emulator).get_blob(attachment.storage_name)
    assert blob is not None and blob.download_as_bytes() == PNG
    assert blob.content_type == "image/png"
