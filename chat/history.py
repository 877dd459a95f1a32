"""Reading a conversation's history for the pages: pages of messages grouped into turns."""

from dataclasses import dataclass, field

from django.conf import settings

from chat import turns
from chat.models import Conversation, Message
from chat.rendering import render_markdown

PAGE_SIZE = 50


@dataclass
class TurnView:
    """One exchange as shown on the page: a user message and what answered it."""

    root_id: int
    messages: list[Message] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return any(m.status == Message.Status.STREAMING for m in self.messages)


def list_conversations(user, limit: int = 100) -> list[Conversation]:
    return list(
        Conversation.objects.for_user(user)
        .only("session_id", "title", "updated_at")
        .order_by("-updated_at")[:limit]
    )


def page_of_messages(
    conversation: Conversation, before: int | None = None, limit: int = PAGE_SIZE
) -> tuple[list[Message], bool]:
    """The last `limit` messages (before a message id, for scrolling back), oldest first."""
    queryset = conversation.messages.all()
    if before is not None:
        queryset = queryset.filter(pk__lt=before)
    rows = list(queryset.order_by("-pk")[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    return rows, has_more


def group_turns(messages: list[Message]) -> list[TurnView]:
    grouped: list[TurnView] = []
    for message in messages:
        if message.role == Message.Role.USER or not grouped:
            grouped.append(TurnView(root_id=message.pk))
        grouped[-1].messages.append(message)
    return grouped


def turn_messages(conversation_id: int, root_id: int) -> TurnView | None:
    """A turn read fresh from the database: its root message and everything after it up to
    the next user message."""
    next_user = (
        Message.objects.filter(conversation_id=conversation_id, role="user", pk__gt=root_id)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )
    queryset = Message.objects.filter(conversation_id=conversation_id, pk__gte=root_id)
    if next_user is not None:
        queryset = queryset.filter(pk__lt=next_user)
    messages = list(queryset.order_by("pk"))
    if not messages or messages[0].pk != root_id:
        return None
    return TurnView(root_id=root_id, messages=messages)


def live_text(conversation_id: int) -> dict[int, dict]:
    """For a turn running in this process, the freshest text of its streaming message."""
    turn = turns.get_turn(conversation_id)
    if turn is None or turn.assistant_message_id is None:
        return {}
    return {
        turn.assistant_message_id: {
            "html": render_markdown(turn.content),
            "reasoning": render_markdown(turn.reasoning),
        }
    }


def is_running(conversation: Conversation) -> bool:
    return conversation.messages.streaming().exists()


def current_model(conversation: Conversation | None) -> str:
    return (conversation.model if conversation else "") or settings.OPENROUTER_DEFAULT_MODEL
