"""Images returned by MCP tools become attachments of the conversation: checked like uploads,
stored in the attachments storage, shown on the tool card through signed owner-checked URLs,
deleted and expired with the conversation, and never sent to the model."""

import base64
import json
import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from django.utils import timezone
from mcp.types import ImageContent, TextContent

from attachments.models import Attachment
from attachments.services import cleanup_attachments
from chat.models import Conversation, Message
from integrations import toolloop
from tests.attachments.conftest import GIF, PDF, png_bytes
from tests.integrations.conftest import chat, set_calls, tool_events
from tests.integrations.mcp_testserver import READ_ONLY, build

pytestmark = pytest.mark.django_db(transaction=True)

PNG = png_bytes(2, 3)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# What a tool may send as an image: (base64 data, declared mime type).
SAMPLES = {
    "png": (b64(PNG), "image/png"),
    "svg": (
        b64(b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        "image/png",
    ),
    "svg-declared": (b64(b'<svg xmlns="http://www.w3.org/2000/svg"/>'), "image/svg+xml"),
    "html": (b64(b"<!DOCTYPE html><html><body><script>alert(1)</script>"), "image/png"),
    "text": (b64(b"plain text pretending to be a picture"), "image/png"),
    "not-base64": ("%%% this is not base64 %%%", "image/png"),
    "polyglot": (b64(GIF[:-1] + b"<script>alert(document.cookie)</script>;"), "image/gif"),
    "pdf": (b64(PDF), "image/png"),
}


def images_server():
    """The suite's test MCP server plus a tool returning the named sample images."""
    server = build("alpha")

    @server.tool(annotations=READ_ONLY)
    def images(samples: list[str]) -> list:
        """Return the named sample images after a line of text."""
        content: list = [TextContent(type="text", text="here you go")]
        for name in samples:
            data, mime = SAMPLES[name]
            content.append(ImageContent(type="image", data=data, mime_type=mime))
        return content

    return server


@pytest.fixture
def tool_images(mcp_server, add_server, fake_openrouter, aapi):
    """Run a turn whose tool returns these sample images; its events and tool message."""
    add_server("alpha", mcp_server("alpha", mcp=images_server()).url)

    async def run(*samples: str, **body):
        set_calls(fake_openrouter, ("images", {"samples": list(samples)}))
        events = await chat(aapi, **body)
        assert events[-1].data == "[DONE]"
        done = tool_events(events)[-1]
        assert done["status"] == "finished", done
        tool = await Message.objects.aget(pk=done["message_id"])
        return events, done, tool

    return run


def session_of(events) -> str:
    return next(e.json["session_id"] for e in events if e.name == "session")


def sent_tool_result(fake_openrouter) -> dict:
    """The tool message of the model request that followed the call."""
    return fake_openrouter.requests[1]["body"]["messages"][-1]


async def logged_in(user) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


async def body_of(response) -> bytes:
    if not response.streaming:
        return response.content
    chunks = response.streaming_content
    if hasattr(chunks, "__aiter__"):
        return b"".join([c async for c in chunks])
    return b"".join(chunks)


# Storing ------------------------------------------------------------------------------------


async def test_an_image_a_tool_returns_becomes_an_attachment_of_the_users_conversation(
    tool_images, user, fake_openrouter, attachments_storage
):
    events, done, tool = await tool_images("png")

    image = await Attachment.objects.select_related("conversation").aget()
    assert image.user_id == user.pk and image.conversation is not None
    assert image.conversation.session_id == session_of(events)
    assert image.message_id == tool.pk
    assert image.kind == "image" and image.mime_type == "image/png"
    assert (image.width, image.height, image.size_bytes) == (2, 3, len(PNG))
    assert image.original_name == "images-1.png"
    # A name we generate, in the uploads' storage: the tool's bytes, unchanged.
    assert re.fullmatch(rf"u{user.pk}/att_[0-9a-f]{{24}}\.png", image.storage_name)
    assert (attachments_storage / image.storage_name).read_bytes() == PNG
    # Referenced exactly as a user message references an upload; no data URL in the row.
    assert tool.content_parts == [{"type": "attachment", "attachment_id": image.public_id}]
    assert "base64" not in json.dumps(tool.content_parts)
    assert done["images"] == 1
    # The model gets the text only.
    sent = sent_tool_result(fake_openrouter)
    assert sent["role"] == "tool" and isinstance(sent["content"], str)
    assert "here you go" in sent["content"] and SAMPLES["png"][0] not in json.dumps(sent)


async def test_the_tool_card_shows_the_image_through_a_signed_url_only_its_owner_can_open(
    tool_images, user, make_user
):
    events, _, tool = await tool_images("png")
    image = await Attachment.objects.aget()
    owner = await logged_in(user)

    page = await owner.get(f"/c/{session_of(events)}/")

    assert page.status_code == 200
    html = page.content.decode()
    card = html.split(f'id="msg-{tool.pk}"')[1].split("</article>")[0]
    (src,) = re.findall(r'<img class="attachment-thumb" src="([^"]+)"', card)
    src = src.replace("&amp;", "&")
    assert src.startswith(f"/attachments/{image.public_id}/?token=")
    assert "data:image" not in html
    download = await owner.get(src)
    assert download.status_code == 200 and download["Content-Type"] == "image/png"
    assert await body_of(download) == PNG
    mallory = await logged_in(await sync_to_async(make_user)("mallory"))
    assert (await mallory.get(src)).status_code == 404
    assert (await owner.get(src.split("?")[0])).status_code == 404, "the signature is required"


# Deletion and retention ---------------------------------------------------------------------


async def test_deleting_the_conversation_deletes_the_tool_images(
    tool_images, aapi, attachments_storage
):
    events, _, _ = await tool_images("png", "png")
    images = [a async for a in Attachment.objects.all()]
    assert len(images) == 2

    response = await aapi.delete(f"/api/chat/session/{session_of(events)}")

    assert response.status_code == 204
    assert not await Attachment.objects.aexists()
    assert not any((attachments_storage / a.storage_name).exists() for a in images)


async def test_deleting_the_message_that_led_to_the_call_deletes_its_images(
    tool_images, aapi, attachments_storage
):
    events, _, tool = await tool_images("png")
    image = await Attachment.objects.aget()
    question = await Message.objects.aget(conversation_id=tool.conversation_id, role="user")

    response = await aapi.delete(f"/api/chat/session/{session_of(events)}/messages/{question.pk}")

    assert response.status_code == 204
    assert not await Attachment.objects.aexists()
    assert not (attachments_storage / image.storage_name).exists()


async def test_later_turns_neither_send_nor_renew_tool_images_and_the_cleanup_expires_them(
    tool_images, aapi, fake_openrouter, attachments_storage, settings
):
    events, _, _ = await tool_images("png")
    image = await Attachment.objects.aget()
    stored_at = image.last_used_at

    await chat(aapi, "fake/ok", "and now?", session_id=session_of(events))

    later = fake_openrouter.requests[-1]["body"]
    assert later["messages"][-1]["content"] == "and now?"
    assert "image_url" not in json.dumps(later) and SAMPLES["png"][0] not in json.dumps(later)
    await image.arefresh_from_db()
    assert image.last_used_at == stored_at, "retention counts from when the tool returned it"

    await Attachment.objects.filter(pk=image.pk).aupdate(
        last_used_at=timezone.now() - timedelta(days=settings.ATTACHMENTS_RETENTION_DAYS + 1)
    )
    report = await sync_to_async(cleanup_attachments)()

    assert [a.public_id for a in report.removed] == [image.public_id]
    assert not await Attachment.objects.aexists()
    assert not (attachments_storage / image.storage_name).exists()


# Refused images -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        ("svg", "unsupported file type: only PNG, JPEG, WebP and GIF images"),
        ("svg-declared", "unsupported file type: only PNG, JPEG, WebP and GIF images"),
        ("html", "unsupported file type: only PNG, JPEG, WebP and GIF images"),
        ("text", "unsupported file type: only PNG, JPEG, WebP and GIF images"),
        ("pdf", "unsupported file type: only PNG, JPEG, WebP and GIF images"),
        ("polyglot", "unsupported file type: the image contains HTML or SVG markup"),
        ("not-base64", "not valid base64"),
    ],
)
async def test_an_invalid_image_is_skipped_with_a_note_and_the_turn_goes_on(
    tool_images, fake_openrouter, attachments_storage, sample, reason
):
    _, done, tool = await tool_images(sample)

    note = f"[Image 1 was not kept: {reason}.]"
    assert tool.content.startswith("here you go") and tool.content.endswith(note)
    assert tool.content_parts is None and done["images"] == 0
    assert not await Attachment.objects.aexists()
    assert not attachments_storage.exists() or not any(attachments_storage.rglob("*.*"))
    assert sent_tool_result(fake_openrouter)["content"].endswith(note)
    answer = await Message.objects.filter(role="assistant").alast()
    assert answer is not None and answer.status == "complete"


async def test_a_valid_image_is_kept_next_to_a_refused_one(tool_images):
    _, done, tool = await tool_images("svg", "png")

    image = await Attachment.objects.aget()
    assert image.original_name == "images-2.png"
    assert tool.content_parts == [{"type": "attachment", "attachment_id": image.public_id}]
    assert "[Image 1 was not kept: unsupported file type" in tool.content
    assert "Image 2" not in tool.content and done["images"] == 1


async def test_images_over_the_size_limits_are_skipped_with_a_note(
    tool_images, settings, monkeypatch
):
    settings.ATTACHMENTS_MAX_SIZE_BYTES = len(PNG) - 1
    _, _, tool = await tool_images("png")
    assert tool.content.endswith(
        f"[Image 1 was not kept: file too large (the limit is {len(PNG) - 1} bytes).]"
    )

    settings.ATTACHMENTS_MAX_SIZE_BYTES = 10 * 1024 * 1024
    monkeypatch.setattr(toolloop, "MAX_IMAGE_CHARS", len(SAMPLES["png"][0]) - 1)
    _, _, tool = await tool_images("png")
    assert tool.content.endswith(
        f"[Image 1 was not kept: too large ({len(SAMPLES['png'][0])} base64 characters).]"
    )
    assert not await Attachment.objects.aexists()


async def test_images_past_the_per_result_limit_are_left_out_with_a_note(tool_images):
    _, done, tool = await tool_images(*["png"] * (toolloop.MAX_IMAGES + 2))

    assert await Attachment.objects.acount() == toolloop.MAX_IMAGES == done["images"]
    assert len(tool.content_parts or []) == toolloop.MAX_IMAGES
    assert tool.content.endswith(
        f"[2 more image(s) were not kept: at most {toolloop.MAX_IMAGES} per result.]"
    )


async def test_a_storage_failure_costs_the_image_not_the_turn(
    tool_images, settings, tmp_path, caplog
):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the storage directory should be")
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(blocked)},
        },
    }

    _, done, tool = await tool_images("png")

    assert tool.content.endswith("[Image 1 was not kept: it could not be stored.]")
    assert tool.content_parts is None and done["images"] == 0
    assert not await Attachment.objects.aexists()
    assert await Conversation.objects.acount() == 1
    assert "could not store image 1 of tool images" in caplog.text
