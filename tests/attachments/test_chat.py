import base64

import pytest
from asgiref.sync import sync_to_async

from attachments import services
from attachments.models import Attachment
from chat.models import Message
from tests.attachments.conftest import PDF, png_bytes, upload
from tests.sse import read_stream

pytestmark = pytest.mark.django_db(transaction=True)

PNG = png_bytes()


async def attach(user, data=PNG, name="photo.png", session_id="chat-1") -> Attachment:
    return await sync_to_async(services.attach_file)(user, session_id, upload(name, data))


async def send(client, parts, session_id="chat-1", **body):
    response = await client.post(
        "/api/chat/stream",
        {"session_id": session_id, "messages": [{"role": "user", "content": parts}], **body},
        content_type="application/json",
    )
    return response


def last_user_content(fake) -> list:
    body = fake.requests[-1]["body"]
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


async def test_local_image_reaches_the_model_inline_as_an_image_url_part(
    aapi, user, fake_openrouter
):
    attachment = await attach(user)
    response = await send(
        aapi,
        [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "attachment", "attachment_id": attachment.public_id},
        ],
    )
    assert response.status_code == 200
    await read_stream(response)
    text, image = last_user_content(fake_openrouter)
    assert text == {"type": "text", "text": "What is in this picture?"}
    assert image["type"] == "image_url"
    prefix = "data:image/png;base64,"
    assert image["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image["image_url"]["url"][len(prefix) :]) == PNG


async def test_pdf_reaches_the_model_as_an_openrouter_file_part(aapi, user, fake_openrouter):
    attachment = await attach(user, PDF, "report.pdf")
    response = await send(aapi, [{"type": "attachment", "attachment_id": attachment.public_id}])
    await read_stream(response)
    [part] = last_user_content(fake_openrouter)
    assert part["type"] == "file"
    assert part["file"]["filename"] == "report.pdf"
    data = part["file"]["file_data"]
    assert data.startswith("data:application/pdf;base64,")
    assert base64.b64decode(data.split(",", 1)[1]) == PDF


async def test_attachment_referenced_by_its_display_url_is_resolved(aapi, user, fake_openrouter):
    attachment = await attach(user)
    doc = await sync_to_async(services.attachment_document)(attachment)
    response = await send(aapi, [{"type": "image_url", "image_url": {"url": doc["displayUrl"]}}])
    await read_stream(response)
    [image] = last_user_content(fake_openrouter)
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    stored = await Message.objects.filter(role="user").alast()
    assert stored is not None
    assert stored.content_parts == [{"type": "attachment", "attachment_id": attachment.public_id}]


async def test_another_users_attachment_is_404_with_no_model_call_and_nothing_stored(
    aapi, user, other_user, fake_openrouter
):
    theirs = await attach(other_user, session_id="their-chat")
    by_id = await send(aapi, [{"type": "attachment", "attachment_id": theirs.public_id}])
    by_url = await send(
        aapi,
        [{"type": "image_url", "image_url": {"url": services.display_url(theirs)}}],
        session_id="chat-2",
    )
    assert by_id.status_code == 404 and by_url.status_code == 404
    assert fake_openrouter.requests == []
    assert not await Message.objects.filter(conversation__user=user).aexists()
    # The conversation the request would have created is rolled back too.
    assert not await user.conversations.aexists()


async def test_history_resends_attachments_and_sending_marks_them_used(aapi, user, fake_openrouter):
    attachment = await attach(user)
    await Attachment.objects.filter(pk=attachment.pk).aupdate(
        last_used_at=attachment.last_used_at.replace(year=2020)
    )
    first = await send(aapi, [{"type": "attachment", "attachment_id": attachment.public_id}])
    await read_stream(first)
    second = await send(aapi, "and now?")
    await read_stream(second)
    users = [m for m in fake_openrouter.requests[-1]["body"]["messages"] if m["role"] == "user"]
    assert users[0]["content"][0]["type"] == "image_url"
    assert users[1]["content"] == "and now?"
    refreshed = await Attachment.objects.aget(pk=attachment.pk)
    assert refreshed.last_used_at.year > 2020
    assert refreshed.message_id is not None


@pytest.fixture
async def catalogue(fake_openrouter):
    """The real model catalogue (presets app), fetched from the fake with chosen modalities."""
    from presets import catalogue as models

    original = fake_openrouter.models

    async def load(inputs_by_model: dict[str, list[str]]):
        fake_openrouter.models = [
            {
                "id": model,
                "architecture": {"input_modalities": inputs, "output_modalities": ["text"]},
            }
            for model, inputs in inputs_by_model.items()
        ]
        models.clear_cache()
        await models.get_models()

    yield load
    fake_openrouter.models = original
    models.clear_cache()


async def test_model_without_image_input_gets_a_notice_instead_of_a_failed_turn(
    aapi, user, fake_openrouter, catalogue
):
    await catalogue({"fake/ok": ["text"]})
    image = await attach(user)
    pdf = await attach(user, PDF, "report.pdf")
    response = await send(
        aapi,
        [
            {"type": "text", "text": "Describe"},
            {"type": "attachment", "attachment_id": image.public_id},
            {"type": "attachment", "attachment_id": pdf.public_id},
        ],
    )
    events, _ = await read_stream(response)
    notices = [e.json for e in events if e.name == "notice"]
    assert notices[0]["type"] == "attachments_dropped"
    assert "does not accept images" in notices[0]["message"]
    assert events[-2].name == "metadata" and events[-2].json["status"] == "complete"
    _text, note, file_part = last_user_content(fake_openrouter)
    assert note["type"] == "text" and "photo.png left out" in note["text"]
    assert file_part["type"] == "file"


async def test_model_with_image_input_gets_the_image_and_no_notice(
    aapi, user, fake_openrouter, catalogue
):
    await catalogue({"fake/ok": ["text", "image", "file"]})
    image = await attach(user)
    response = await send(aapi, [{"type": "attachment", "attachment_id": image.public_id}])
    events, _ = await read_stream(response)
    assert not [e for e in events if e.name == "notice" and "attachments" in e.data]
    [part] = last_user_content(fake_openrouter)
    assert part["type"] == "image_url"
