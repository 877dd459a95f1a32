import pytest
from django.template.loader import render_to_string

from chat.live import render_content
from chat.models import Message


def test_content_frame_is_the_body_and_reasoning_partials_of_a_streaming_message():
    content = "Hello **world** <script>x</script>"
    reasoning = "step 1 <b>\nstep 2"
    frame = render_content(7, content, reasoning)

    message = Message(pk=7, status=Message.Status.STREAMING)
    from chat.rendering import render_markdown

    message.live_html = render_markdown(content)  # type: ignore[attr-defined]
    message.live_reasoning = reasoning  # type: ignore[attr-defined]
    expected = render_to_string("chat/chat.html#body", {"m": message}) + render_to_string(
        "chat/chat.html#reasoning", {"m": message}
    )
    assert frame == expected
    assert "<script>" not in frame and "&lt;b&gt;<br>step 2" in frame


def test_content_frame_without_reasoning_is_the_body_alone():
    frame = render_content(3, "hi", "")
    assert frame.startswith('<div id="msg-3-body"') and "reasoning" not in frame


def test_a_reloaded_page_shows_the_live_reasoning_as_text_once_escaped():
    from chat.history import show_live_text
    from chat.turns import Turn

    message = Message(pk=5, status=Message.Status.STREAMING, content="old", reasoning="old")
    turn = Turn(
        conversation_id=1, content_parts=["new **", "text**"], reasoning_parts=["think <b>\nmore"]
    )
    turn.assistant_message_id = 5
    show_live_text([message], turn)
    body = render_to_string("chat/chat.html#body", {"m": message})
    reasoning = render_to_string("chat/chat.html#reasoning", {"m": message})
    assert "<strong>text</strong>" in body and "old" not in body
    assert "think &lt;b&gt;<br>more" in reasoning and "&lt;p&gt;" not in reasoning


@pytest.mark.django_db
def test_a_new_turn_drawn_from_the_messages_just_stored_is_the_turn_read_back(user):
    # The page's frame for a new turn is drawn from the messages prepare_turn just stored;
    # it must be the same HTML as the turn read from the database.
    from chat import history, live, services

    first = services.prepare_turn(
        user, services.TurnInput(messages=[{"role": "user", "content": "first **question**"}])
    )
    Message.objects.filter(pk=first.assistant.pk).update(status="complete", content="answer")
    prepared = services.prepare_turn(
        user,
        services.TurnInput(
            messages=[{"role": "user", "content": "and a `second` one"}],
            session_id=first.conversation.session_id,
            client_parent_message_id="c-9",
        ),
    )
    assert prepared.user_message is not None
    root_id = prepared.user_message.pk
    view = history.TurnView(root_id, [prepared.user_message, prepared.assistant])
    from_memory = live.render_turn(
        prepared.conversation, root_id, append=True, live=None, view=view
    )
    read_back = live.render_turn(prepared.conversation, root_id, append=True, live=None)
    assert "second" in from_memory and "status-streaming" in from_memory
    assert from_memory == read_back
