import pytest

from chat.models import Conversation, Message
from chat.services import generate_title

pytestmark = pytest.mark.django_db(transaction=True)


async def make_exchange(user, question="How do I bake bread?", answer="Knead it."):
    conversation = await Conversation.objects.acreate(
        user=user, title=question[:60], model="fake/ok"
    )
    asked = await Message.objects.acreate(conversation=conversation, role="user", content=question)
    await Message.objects.acreate(
        conversation=conversation, role="assistant", content=answer, parent=asked, model="fake/ok"
    )
    return conversation, asked


async def test_first_exchange_gets_a_model_written_plain_title(user, fake_openrouter):
    fake_openrouter.reply_tokens = ['"**Baking** bread', ' at home."\nSecond line']
    conversation, asked = await make_exchange(user)
    updated = await generate_title(conversation, asked.pk)
    assert updated is not None and updated.title == "Baking bread at home"
    request = fake_openrouter.requests[-1]["body"]
    assert request["stream"] is False
    assert "How do I bake bread?" in request["messages"][1]["content"]


async def test_a_renamed_conversation_keeps_its_title(user, fake_openrouter):
    fake_openrouter.reply_tokens = ["Model title"]
    conversation, asked = await make_exchange(user)
    await Conversation.objects.filter(pk=conversation.pk).aupdate(title="Mine")
    assert await generate_title(conversation, asked.pk) is None
    assert (await Conversation.objects.aget(pk=conversation.pk)).title == "Mine"


async def test_title_failure_keeps_the_first_line_title(user, fake_openrouter, settings):
    settings.CHAT_TITLE_MODEL = "fake/500"
    conversation, asked = await make_exchange(user)
    assert await generate_title(conversation, asked.pk) is None
    assert (await Conversation.objects.aget(pk=conversation.pk)).title == "How do I bake bread?"


async def test_only_the_first_exchange_is_titled(user, fake_openrouter):
    conversation, _ = await make_exchange(user)
    later = await Message.objects.acreate(conversation=conversation, role="user", content="More?")
    assert await generate_title(conversation, later.pk) is None
    assert fake_openrouter.requests == []
