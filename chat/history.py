"""Reading a conversation's history for the pages: pages of messages grouped into turns."""

import json
from dataclasses import dataclass, field
from types import SimpleNamespace

from chat.models import Conversation, Message
from chat.rendering import render_markdown
from chat.turns import Turn

PAGE_SIZE = 50


@dataclass
class TurnView:
    """One exchange as shown on the page: a user message and what answered it."""

    root_id: int
    messages: list[Message] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return any(m.status == Message.Status.STREAMING for m in self.messages)


def _arguments_text(raw: str) -> str:
    try:
        return json.dumps(json.loads(raw or "{}"), indent=2, ensure_ascii=False)
    except ValueError:
        return raw


def annotate_tool_calls(messages: list[Message], pending_approvals: set[str]) -> None:
    """Prepare the tool cards of a page of messages (no queries).

    A tool result gets `tool_arguments` (from the call that asked for it). An assistant
    message gets `open_calls`: its calls that have no result yet, each running or waiting for
    the user's approval, or, when its answer is no longer streaming, left without a result."""
    results = {m.tool_call_id for m in messages if m.role == Message.Role.TOOL}
    calls: dict[str, dict] = {}
    for message in messages:
        if message.role != Message.Role.ASSISTANT or not message.tool_calls:
            continue
        turn_running = any(
            m.status == Message.Status.STREAMING for m in messages if m.pk >= message.pk
        )
        open_calls = []
        for call in message.tool_calls:
            function = call.get("function") or {}
            arguments = _arguments_text(function.get("arguments", ""))
            calls[call.get("id", "")] = {"arguments": arguments}
            if call.get("id") in results:
                continue
            if call.get("id") in pending_approvals:
                state = "approval"
            elif turn_running:
                state = "running"
            else:
                state = "unanswered"
            open_calls.append(
                {"id": call.get("id", ""), "name": function.get("name", ""), "arguments": arguments,
                 "state": state}
            )  # fmt: skip
        message.open_calls = open_calls  # type: ignore[attr-defined]
    for message in messages:
        if message.role == Message.Role.TOOL:
            found = calls.get(message.tool_call_id)
            message.tool_arguments = found["arguments"] if found else ""  # type: ignore[attr-defined]


def prepare_for_page(messages: list[Message], user_id: int) -> None:
    """Everything the message partials need beyond the rows: attachments (one query; a tool's
    images are attachments of its result too) and tool cards (approvals waiting in this
    process)."""
    from attachments.services import annotate_messages
    from integrations.services import pending_approvals_for

    annotate_messages(messages)
    pending = set(pending_approvals_for(SimpleNamespace(pk=user_id)))
    annotate_tool_calls(messages, pending)


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


def show_live_text(messages: list[Message], turn: Turn | None) -> None:
    """Give the streaming message of a turn running in this process its freshest text (the
    database holds the last checkpoint): `live_html` rendered, `live_reasoning` as text."""
    if turn is None:
        return
    for message in messages:
        if message.pk == turn.assistant_message_id:
            message.live_html = render_markdown(turn.content)  # type: ignore[attr-defined]
            message.live_reasoning = turn.reasoning  # type: ignore[attr-defined]
