import pytest
from asgiref.sync import sync_to_async
from django.http import Http404

from chat.models import Conversation, Message
from presets import services
from tests.sse import read_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def answered_message(aapi) -> Message:
    response = await aapi.post(
        "/api/chat/stream",
        {"messages": [{"role": "user", "content": "count my tokens"}]},
        content_type="application/json",
    )
    await read_stream(response)
    message = await Message.objects.filter(role="assistant").alatest("pk")
    assert message.usage is not None
    return message


async def test_generation_route_returns_the_stats_of_a_real_answer(aapi, fake_openrouter):
    message = await answered_message(aapi)
    assert message.generation_id
    response = await aapi.get(f"/api/chat/generation/{message.generation_id}")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["id"] == message.generation_id
    assert data["provider_name"] == "FakeProvider"
    assert message.usage is not None
    assert data["tokens_completion"] == message.usage["completion_tokens"]


async def test_generation_route_is_404_for_unknown_and_other_users_ids(
    aapi, fake_openrouter, other_user
):
    theirs = await Conversation.objects.acreate(user=other_user)
    await Message.objects.acreate(conversation=theirs, role="assistant", generation_id="gen-x")
    fake_openrouter.generations["gen-x"] = {"id": "gen-x"}
    assert (await aapi.get("/api/chat/generation/gen-x")).status_code == 404
    assert (await aapi.get("/api/chat/generation/gen-nope")).status_code == 404


async def test_details_combine_the_stored_answer_and_openrouters_stats(aapi, fake_openrouter, user):
    message = await answered_message(aapi)
    fake_openrouter.generations[message.generation_id].update(
        {"latency": 321, "generation_time": 654, "total_cost": 0.002, "provider_name": "Groq"}
    )
    details = await services.generation_details(user, message.pk)
    assert message.usage is not None
    assert details["message_id"] == message.pk
    assert details["generation_id"] == message.generation_id
    assert details["model"] == "fake/ok"
    assert details["provider"] == "Groq"
    assert details["latency_ms"] == 321 and details["generation_time_ms"] == 654
    assert details["cost"] == 0.002
    assert details["prompt_tokens"] == message.usage["prompt_tokens"]
    assert details["completion_tokens"] == message.usage["completion_tokens"]
    assert details["duration_ms"] == message.duration_ms
    assert details["upstream"]["id"] == message.generation_id
    assert details["upstream_error"] is None


async def test_details_without_upstream_stats_still_show_what_was_stored(fake_openrouter, user):
    conversation = await Conversation.objects.acreate(user=user)
    message = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        model="fake/ok",
        generation_id="gen-expired",
        usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        routing={"provider": "FakeProvider"},
    )
    details = await services.generation_details(user, message.pk)
    assert details["prompt_tokens"] == 5 and details["total_tokens"] == 12
    assert details["provider"] == "FakeProvider"
    assert details["upstream"] is None
    assert "404" in details["upstream_error"]

    no_id = await Message.objects.acreate(conversation=conversation, role="assistant")
    details = await services.generation_details(user, no_id.pk)
    assert details["upstream_error"] == "This answer has no generation id"
    assert fake_openrouter.requests == []


async def test_details_of_another_users_or_a_user_message_are_404(user, other_user):
    theirs = await Conversation.objects.acreate(user=other_user)
    their_answer = await Message.objects.acreate(conversation=theirs, role="assistant")
    mine = await Conversation.objects.acreate(user=user)
    question = await Message.objects.acreate(conversation=mine, role="user")
    for message_id in (their_answer.pk, question.pk, 999999):
        with pytest.raises(Http404):
            await services.generation_details(user, message_id)


async def test_details_partial_renders_the_numbers(fake_openrouter, user):
    from django.template.loader import render_to_string

    conversation = await Conversation.objects.acreate(user=user)
    message = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        model="fake/ok",
        generation_id="gen-p",
        usage={"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33},
    )
    fake_openrouter.generations["gen-p"] = {
        "id": "gen-p",
        "provider_name": "<b>Evil</b>",
        "latency": 99,
        "total_cost": 0.0042,
        "tokens_prompt": 11,
        "tokens_completion": 22,
    }
    details = await services.generation_details(user, message.pk)
    html = await sync_to_async(render_to_string)(
        "presets/generation_details.html", {"details": details}
    )
    assert "gen-p" in html and "99 ms" in html and "0.0042" in html
    assert "&lt;b&gt;Evil&lt;/b&gt;" in html, "upstream text is escaped"
    assert "<script" not in html and "style=" not in html
