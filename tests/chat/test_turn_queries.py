"""What starting a turn asks the database: few queries, the checks folded into them."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import services
from chat.models import Conversation, Message
from presets.services import get_user_settings, set_system_prompt

pytestmark = pytest.mark.django_db


def follow_up(session_id: str, client_id: str = "c-2") -> services.TurnInput:
    return services.TurnInput(
        messages=[{"role": "user", "content": "and then?"}],
        session_id=session_id,
        client_parent_message_id=client_id,
    )


@pytest.fixture
def conversation(user, settings):
    settings.OPENROUTER_API_KEY = "sk-test"
    conversation = Conversation.objects.create(user=user, title="t", session_id="s-1")
    question = Message.objects.create(
        conversation=conversation, role="user", content="hi", client_message_id="c-1"
    )
    Message.objects.create(
        conversation=conversation, role="assistant", content="hello", parent=question
    )
    get_user_settings(user)  # the settings row exists, as after any first turn
    return conversation


def selects_of(captured, table: str) -> list[str]:
    """SELECTs of rows of `table` (their first column is its id)."""
    return [
        q["sql"] for q in captured.captured_queries if q["sql"].startswith(f'SELECT "{table}"."id"')
    ]


def test_a_follow_up_turn_reads_the_conversation_and_its_checks_in_one_query(user, conversation):
    with CaptureQueriesContext(connection) as captured:
        prepared = services.prepare_turn(user, follow_up("s-1"))
    # The conversation, the resend check, the running-answer check and the first-exchange
    # check: one SELECT on the conversation; messages are read once more, for the prompt.
    chat_reads = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith("SELECT") and '"chat_' in q["sql"]
    ]
    assert len(chat_reads) == 2, chat_reads
    assert len(selects_of(captured, "chat_conversation")) == 1
    assert len(selects_of(captured, "chat_message")) == 1
    assert not prepared.first_exchange
    assert [m["content"] for m in prepared.prompt or []][1:] == ["hi", "hello", "and then?"]


def test_the_folded_checks_still_refuse_a_resend_and_a_second_turn(user, conversation):
    with pytest.raises(services.DuplicateMessage):
        services.prepare_turn(user, follow_up("s-1", client_id="c-1"))
    services.prepare_turn(user, follow_up("s-1"))  # leaves its answer `streaming`
    with pytest.raises(services.turns.TurnInProgress):
        services.prepare_turn(user, follow_up("s-1", client_id="c-3"))


def test_first_exchange_is_the_first_user_message_of_a_conversation(user, conversation):
    new = services.prepare_turn(
        user, services.TurnInput(messages=[{"role": "user", "content": "x"}])
    )
    assert new.created and new.first_exchange
    # A conversation made by an upload before any message: its first message is still first.
    Conversation.objects.create(user=user, session_id="s-empty")
    empty = services.prepare_turn(user, follow_up("s-empty"))
    assert not empty.created and empty.first_exchange


def test_an_api_token_brings_the_users_settings_for_one_read(user, conversation):
    set_system_prompt(user, "Be brief.")
    raw = services.create_api_token(user)

    with CaptureQueriesContext(connection) as captured:
        authenticated = services.authenticate_token(raw)
        assert authenticated == user
        assert get_user_settings(authenticated).system_prompt == "Be brief."
    assert not selects_of(captured, "presets_usermodelsettings"), "settings read on their own"

    # Used once: a user object that lives on reads its settings afresh next time.
    set_system_prompt(user, "Be thorough.")
    with CaptureQueriesContext(connection) as captured:
        assert get_user_settings(authenticated).system_prompt == "Be thorough."
    assert len(selects_of(captured, "presets_usermodelsettings")) == 1


def test_a_token_of_a_user_without_settings_still_starts_from_the_defaults(make_user):
    newcomer = make_user("newcomer")
    raw = services.create_api_token(newcomer)
    authenticated = services.authenticate_token(raw)
    assert get_user_settings(authenticated).pk is not None  # created from the defaults
