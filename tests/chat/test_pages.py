import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, user):
    client.force_login(user)
    return client


def add_turns(conversation, count: int) -> None:
    rows = []
    for i in range(count):
        rows.append(Message(conversation=conversation, role="user", content=f"question {i}"))
        rows.append(
            Message(
                conversation=conversation,
                role="assistant",
                content=f"answer {i}",
                html=f"<p>answer {i}</p>",
                model="fake/ok",
                usage={"total_tokens": 12},
                cost="0.0001",
                duration_ms=900,
            )
        )
    Message.objects.bulk_create(rows)


def test_pages_need_a_logged_in_staff_user(client, make_user):
    assert client.get("/").status_code == 302
    assert client.get("/").url.startswith("/login/")
    client.force_login(make_user("viewer", staff=False))
    assert client.get("/").status_code == 302


def test_login_page_logs_staff_in_and_refuses_others(client, make_user):
    make_user("staff", password="pw-Secret-123")
    make_user("viewer", staff=False, password="pw-Secret-123")
    refused = client.post("/login/", {"username": "viewer", "password": "pw-Secret-123"})
    assert "not a staff account" in refused.content.decode()
    ok = client.post("/login/", {"username": "staff", "password": "pw-Secret-123"})
    assert ok.status_code == 302 and ok.url == "/"


def test_empty_state_page_has_the_composer_and_a_strict_csp(staff_client):
    response = staff_client.get("/")
    html = response.content.decode()
    assert 'id="empty-state"' in html
    assert 'ws-connect="/ws/chat/"' in html
    assert 'id="composer"' in html and 'name="message"' in html
    csp = response["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag, f"inline script: {tag}"
    assert "style=" not in html
    assert '"selfRequestsOnly": true' in html and '"allowEval": false' in html


def test_missing_api_key_is_said_on_the_page(staff_client, settings):
    settings.OPENROUTER_API_KEY = ""
    assert "Chat needs an OpenRouter API key" in staff_client.get("/").content.decode()
    settings.OPENROUTER_API_KEY = "sk-set"
    assert "Chat needs an OpenRouter API key" not in staff_client.get("/").content.decode()


def test_conversation_page_shows_messages_with_sanitised_content_in_hx_disable(staff_client, user):
    conversation = Conversation.objects.create(user=user, title="Plans")
    Message.objects.create(
        conversation=conversation, role="user", content='<img src=x onerror="alert(1)">'
    )
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="**hi**",
        html="<p><strong>hi</strong></p>",
    )
    html = staff_client.get(f"/c/{conversation.session_id}/").content.decode()
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<strong>hi</strong>" in html
    bodies = re.findall(r'<div id="msg-\d+-body"[^>]*>', html)
    assert len(bodies) == 2 and all("hx-disable" in b for b in bodies)
    assert "<title>Plans · Chat</title>" in html


def test_another_users_conversation_page_is_404(staff_client, other_user):
    theirs = Conversation.objects.create(user=other_user, title="secret plans")
    response = staff_client.get(f"/c/{theirs.session_id}/")
    assert response.status_code == 404
    assert "secret plans" not in response.content.decode()
    assert staff_client.get(f"/c/{theirs.session_id}/older?before=99").status_code == 404
    assert staff_client.post(f"/c/{theirs.session_id}/rename", {"title": "x"}).status_code == 404
    assert staff_client.post(f"/c/{theirs.session_id}/delete").status_code == 404
    assert Conversation.objects.filter(pk=theirs.pk, title="secret plans").exists()


@pytest.mark.parametrize("turns", [5, 200])
def test_conversation_page_query_count_does_not_grow_with_messages(staff_client, user, turns):
    conversation = Conversation.objects.create(user=user)
    add_turns(conversation, turns)
    for i in range(3):
        Conversation.objects.create(user=user, title=f"other {i}")
    staff_client.get("/")  # the first visit creates the user's model settings row
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(f"/c/{conversation.session_id}/")
    assert response.status_code == 200
    # session, user, conversation, messages page, sidebar list, the user's model settings (next
    # model), suggestions: the same at 10 and 400 messages. (Attachments cost one more query
    # when messages have any: tests/attachments covers that.)
    assert len(queries) == 7, [q["sql"] for q in queries]


def test_page_shows_the_last_50_messages_and_scrolls_back_for_older(staff_client, user):
    conversation = Conversation.objects.create(user=user)
    add_turns(conversation, 40)
    html = staff_client.get(f"/c/{conversation.session_id}/").content.decode()
    assert "question 39" in html and "question 15" in html and "question 14" not in html
    match = re.search(r'\?before=(\d+)"', html)
    assert match is not None
    oldest = int(match.group(1))
    older = staff_client.get(f"/c/{conversation.session_id}/older?before={oldest}").content.decode()
    assert "question 14" in older and "question 0" in older and "question 15" not in older
    assert 'id="older"' not in older, "nothing older is left"
    assert staff_client.get(f"/c/{conversation.session_id}/older?before=x").status_code == 400


def test_rename_returns_the_updated_list_item(staff_client, user):
    conversation = Conversation.objects.create(user=user, title="Old")
    response = staff_client.post(f"/c/{conversation.session_id}/rename", {"title": "  New   name "})
    assert response.status_code == 200
    assert 'class="conv-title">New name<' in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "New name"


def test_delete_conversation_redirects_home(staff_client, user):
    conversation = Conversation.objects.create(user=user)
    add_turns(conversation, 2)
    response = staff_client.post(
        f"/c/{conversation.session_id}/delete", headers={"HX-Request": "true"}
    )
    assert response["HX-Redirect"] == "/"
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_delete_message_removes_it_and_its_replies_and_redraws_the_turn(staff_client, user):
    conversation = Conversation.objects.create(user=user)
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    answer = Message.objects.create(
        conversation=conversation, role="assistant", content="a", parent=question
    )
    url = f"/c/{conversation.session_id}/messages/{answer.pk}/delete"
    response = staff_client.post(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert f'id="turn-{question.pk}"' in body and f'id="msg-{answer.pk}"' not in body
    response = staff_client.post(f"/c/{conversation.session_id}/messages/{question.pk}/delete")
    assert response.content == b""
    assert not Message.objects.exists()
    assert staff_client.post(url).status_code == 404


def test_message_ids_in_the_page_are_plain_numbers_whatever_the_number_format(
    staff_client, user, settings
):
    # Live frames address messages as `msg-<id>` (formatted in Python); the page must use the
    # same ids even where a deployment turns on thousand separators.
    settings.USE_THOUSAND_SEPARATOR = True
    conversation = Conversation.objects.create(user=user, title="Big ids")
    question = Message.objects.create(pk=12345, conversation=conversation, role="user", content="q")
    Message.objects.create(
        pk=12346,
        conversation=conversation,
        role="assistant",
        parent=question,
        content="a",
        html="<p>a</p>",
        usage={"total_tokens": 4321},
    )
    html = staff_client.get(f"/c/{conversation.session_id}/").content.decode()
    assert 'id="turn-12345"' in html
    assert 'id="msg-12346"' in html and 'data-message-id="12346"' in html
    assert 'id="msg-12346-body"' in html
    assert "12,34" not in html


def test_the_older_messages_link_carries_a_plain_id_whatever_the_number_format(
    staff_client, user, settings
):
    settings.USE_THOUSAND_SEPARATOR = True
    conversation = Conversation.objects.create(user=user, title="Long")
    Message.objects.bulk_create(
        Message(pk=20000 + i, conversation=conversation, role="user", content=f"q{i}")
        for i in range(60)
    )
    html = staff_client.get(f"/c/{conversation.session_id}/").content.decode()
    oldest_shown = 20000 + 60 - 50
    assert f"?before={oldest_shown}" in html
    older = staff_client.get(f"/c/{conversation.session_id}/older?before={oldest_shown}")
    assert older.status_code == 200
    assert 'id="msg-20000"' in older.content.decode()
