import json

import pytest
from django.test import Client

from chat.models import ApiToken, Conversation, Message
from chat.services import create_api_token
from tests.sse import content_of, read_stream

pytestmark = pytest.mark.django_db


def make_conversation(user, **kwargs) -> Conversation:
    return Conversation.objects.create(user=user, **kwargs)


def make_turn(conversation, text="question", answer="answer") -> tuple[Message, Message]:
    question = Message.objects.create(conversation=conversation, role="user", content=text)
    reply = Message.objects.create(
        conversation=conversation, role="assistant", content=answer, parent=question
    )
    return question, reply


def test_health_needs_no_login_and_names_the_models(client, settings):
    settings.OPENROUTER_DEFAULT_MODEL = "some/model"
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "default_model": "some/model",
        "active_model": "some/model",
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
    ],
)
def test_api_without_valid_credentials_is_401_json(client, headers):
    response = client.get("/api/chat/test-stream", headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"].startswith("Authentication required")


def test_revoked_token_and_deactivated_user_stop_working(user, token, api):
    assert api.get("/api/chat/test-stream").status_code == 200
    ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
    assert api.get("/api/chat/test-stream").status_code == 401
    ApiToken.objects.update(revoked_at=None)
    user.is_active = False
    user.save()
    assert api.get("/api/chat/test-stream").status_code == 401


def test_tokens_are_stored_hashed(user):
    raw = create_api_token(user)
    stored = ApiToken.objects.get()
    assert raw not in (stored.key_hash, stored.hint)
    assert len(stored.key_hash) == 64 and raw.startswith(stored.hint)


def test_session_auth_needs_staff_and_csrf_on_unsafe_methods(make_user):
    staff = make_user("staff")
    plain = make_user("plain", staff=False)
    conversation = make_conversation(staff)

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(plain)
    assert browser.get("/api/chat/test-stream").status_code == 401

    browser.force_login(staff)
    assert browser.get("/api/chat/test-stream").status_code == 200
    url = f"/api/chat/session/{conversation.session_id}"
    refused = browser.delete(url)
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert Conversation.objects.filter(pk=conversation.pk).exists()

    browser.get("/")  # sets the csrftoken cookie
    csrf = browser.cookies["csrftoken"].value
    assert browser.delete(url, headers={"X-CSRFToken": csrf}).status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


@pytest.mark.django_db(transaction=True)
async def test_test_stream_sends_three_messages_then_done(aapi):
    response = await aapi.get("/api/chat/test-stream")
    assert response["Content-Type"] == "text/event-stream"
    events, _ = await read_stream(response)
    assert [e.name for e in events] == ["message"] * 4
    assert content_of(events[:3]) == "Hello from server!"
    assert [content_of([e]) for e in events[:3]] == ["Hello ", "from ", "server!"]
    assert events[3].data == "[DONE]"


def test_delete_session_is_idempotent_and_removes_messages(user, api):
    conversation = make_conversation(user)
    make_turn(conversation)
    url = f"/api/chat/session/{conversation.session_id}"
    assert api.delete(url).status_code == 204
    assert not Message.objects.exists()
    assert api.delete(url).status_code == 204


def test_another_users_session_is_404_and_nothing_is_deleted(user, other_user, api):
    theirs = make_conversation(other_user)
    question, _ = make_turn(theirs)
    assert api.delete(f"/api/chat/session/{theirs.session_id}").status_code == 404
    url = f"/api/chat/session/{theirs.session_id}/messages/{question.pk}"
    assert api.delete(url).status_code == 404
    assert Message.objects.filter(conversation=theirs).count() == 2


def test_delete_message_cascades_to_its_replies_and_tool_results(user, api):
    conversation = make_conversation(user)
    first_q, first_a = make_turn(conversation, "one", "first answer")
    second_q = Message.objects.create(conversation=conversation, role="user", content="two")
    asks_tool = Message.objects.create(
        conversation=conversation,
        role="assistant",
        parent=second_q,
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{}"}}],
    )
    tool_result = Message.objects.create(
        conversation=conversation, role="tool", parent=asks_tool, tool_call_id="c1", content="42"
    )
    Message.objects.create(
        conversation=conversation, role="assistant", parent=tool_result, content="It is 42"
    )
    url = f"/api/chat/session/{conversation.session_id}/messages/{second_q.pk}"
    assert api.delete(url).status_code == 204
    assert list(conversation.messages.values_list("pk", flat=True)) == [first_q.pk, first_a.pk]


def test_delete_message_by_client_id_and_404_when_nothing_matches(user, api):
    conversation = make_conversation(user)
    question, _ = make_turn(conversation)
    question.client_message_id = "client-abc"
    question.save()
    base = f"/api/chat/session/{conversation.session_id}/messages"
    assert api.delete(f"{base}/nothing-here").status_code == 404
    assert api.delete(f"{base}/999999").status_code == 404
    assert api.delete(f"{base}/client-abc").status_code == 204
    assert not conversation.messages.exists()


def test_generation_stats_are_only_for_your_own_generations(user, other_user, api, fake_openrouter):
    fake_openrouter.generations["gen-mine"] = {"id": "gen-mine", "total_cost": 0.5}
    fake_openrouter.generations["gen-theirs"] = {"id": "gen-theirs", "total_cost": 0.7}
    mine = make_conversation(user)
    theirs = make_conversation(other_user)
    Message.objects.create(conversation=mine, role="assistant", generation_id="gen-mine")
    Message.objects.create(conversation=theirs, role="assistant", generation_id="gen-theirs")

    response = api.get("/api/chat/generation/gen-mine")
    assert response.status_code == 200
    assert response.json() == {"data": {"id": "gen-mine", "total_cost": 0.5}}
    assert api.get("/api/chat/generation/gen-theirs").status_code == 404


def test_generation_stats_upstream_failure_is_a_502(user, api, fake_openrouter, settings):
    conversation = make_conversation(user)
    Message.objects.create(conversation=conversation, role="assistant", generation_id="gen-gone")
    response = api.get("/api/chat/generation/gen-gone")
    assert response.status_code == 404  # the fake does not know it either
    settings.OPENROUTER_BASE_URL = "http://127.0.0.1:9/api/v1"  # nothing listens there
    response = api.get("/api/chat/generation/gen-gone")
    assert response.status_code == 502
    assert response.json() == {"detail": "Could not reach the model API"}


def post_json(api, body, **kwargs):
    return api.post("/api/chat/stream", body, content_type="application/json", **kwargs)


def test_malformed_json_body_is_a_400(api, fake_openrouter):
    response = api.post("/api/chat/stream", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()
    assert fake_openrouter.requests == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": [{"role": "user", "content": "x"}], "session_id": "../../etc"},
        {"messages": [{"role": "user", "content": "x"}], "model": ""},
    ],
)
def test_schema_errors_are_422_with_details(api, fake_openrouter, body):
    response = post_json(api, body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)
    assert not Message.objects.exists()
    assert fake_openrouter.requests == []


def test_only_assistant_messages_is_a_422(api, fake_openrouter):
    response = post_json(api, {"messages": [{"role": "assistant", "content": "hi"}]})
    assert response.status_code == 422
    assert "at least one user" in response.json()["detail"]


def test_stream_into_another_users_session_is_404_without_a_model_call(
    other_user, api, fake_openrouter
):
    theirs = make_conversation(other_user)
    response = post_json(
        api, {"session_id": theirs.session_id, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 404
    assert not Message.objects.exists()
    assert fake_openrouter.requests == []


def test_request_body_over_the_limit_is_a_413(api, settings, fake_openrouter):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"messages": [{"role": "user", "content": "x" * 5000}]}
    response = post_json(api, body)
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large"}


def test_a_second_turn_while_one_is_streaming_is_a_409(user, api, fake_openrouter):
    conversation = make_conversation(user)
    make_turn(conversation)
    Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    response = post_json(
        api,
        {"session_id": conversation.session_id, "messages": [{"role": "user", "content": "again"}]},
    )
    assert response.status_code == 409
    assert conversation.messages.count() == 3


def test_openapi_document_describes_the_json_routes(api):
    response = api.get("/api/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/chat/stream",
        "/api/chat/test-stream",
        "/api/chat/generation/{generation_id}",
        "/api/chat/session/{session_id}",
        "/api/chat/session/{session_id}/messages/{message_id}",
    ):
        assert path in paths, path
    stream = paths["/api/chat/stream"]["post"]
    assert "text/event-stream" in json.dumps(stream["responses"])
    assert "ChatStreamIn" in json.dumps(stream["requestBody"])
