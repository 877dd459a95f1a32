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
