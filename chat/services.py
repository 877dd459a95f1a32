"""Chat domain functions shared by the API, the pages, the consumers and the commands."""

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Value
from django.http import Http404
from django.utils import timezone

from attachments import services as attachments
from chat import turns
from chat.models import ApiToken, Conversation, Message, hash_token
from chat.rendering import render_markdown
from chat.turns import Turn
from presets.services import (
    TurnSettings,
    preload_user_settings,
    turn_settings_for,
    user_system_prompt,
)

log = logging.getLogger(__name__)

# Keys of a chat request that are ours and never forwarded upstream.
_OWN_KEYS = {"session_id", "metadata", "messages", "model", "stream", "stream_options"}
TITLE_LENGTH = 60
# The longest message a page may send (the composer says so too).
MAX_MESSAGE_CHARS = 100_000


# Access -------------------------------------------------------------------------------------


def get_conversation_for_user(user, session_id: str) -> Conversation:
    """The one access helper: the user's conversation, or 404 for anything else."""
    try:
        return Conversation.objects.for_user(user).get(session_id=session_id)
    except Conversation.DoesNotExist:
        raise Http404("Conversation not found") from None


async def aget_conversation_for_user(user, session_id: str) -> Conversation:
    try:
        return await Conversation.objects.for_user(user).aget(session_id=session_id)
    except Conversation.DoesNotExist:
        raise Http404("Conversation not found") from None


# Every API request's lookup, built once (a queryset is only read from, by its copies): the
# active tokens with their users and the users' chat settings (a chat turn reads them next).
# Building it took a fifth of the lookup's time.
_ACTIVE_TOKENS = ApiToken.objects.active().select_related("user__model_settings")


def authenticate_token(raw: str):
    """Return the active user owning this API token, or None."""
    found = list(_ACTIVE_TOKENS.filter(key_hash=hash_token(raw))[:1])
    if not found:
        return None
    token = found[0]
    preload_user_settings(token.user)
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def create_api_token(user, name: str = "") -> str:
    raw, key_hash, hint = ApiToken.generate()
    ApiToken.objects.create(user=user, name=name, key_hash=key_hash, hint=hint)
    return raw


# Conversations and messages -----------------------------------------------------------------


def delete_conversation(user, session_id: str) -> None:
    """Delete the user's conversation; an unknown id is a no-op, another user's id is a 404."""
    conversation = Conversation.objects.filter(session_id=session_id).first()
    if conversation is None:
        return
    if conversation.user_id != user.pk:
        raise Http404("Conversation not found")
    turns.cancel_turn(conversation.pk)
    attachments.delete_for_conversation(conversation)
    conversation.delete()


def delete_message(user, session_id: str, message_ref: str) -> None:
    """Delete one message (by server id or client id) and everything that descends from it."""
    conversation = get_conversation_for_user(user, session_id)
    messages = conversation.messages.all()
    if message_ref.isdigit():
        matched = messages.filter(pk=int(message_ref)) | messages.filter(
            client_message_id=message_ref
        )
    else:
        matched = messages.filter(client_message_id=message_ref)
    targets = list(matched)
    if not targets:
        raise Http404("Message not found")
    if any(m.status == Message.Status.STREAMING for m in targets) or _has_streaming_descendant(
        targets
    ):
        turns.cancel_turn(conversation.pk)
    attachments.delete_for_messages(m.pk for m in targets)
    for message in targets:
        message.delete()


def _has_streaming_descendant(messages: list[Message]) -> bool:
    frontier = [m.pk for m in messages]
    while frontier:
        children = list(Message.objects.filter(parent_id__in=frontier).values_list("pk", "status"))
        if any(status == Message.Status.STREAMING for _, status in children):
            return True
        frontier = [pk for pk, _ in children]
    return False


def recover_interrupted_messages(older_than: timedelta | None = None) -> int:
    """Messages left `streaming` by a crash become `interrupted`, keeping their saved text."""
    stuck = Message.objects.streaming()
    if older_than is not None:
        stuck = stuck.filter(updated_at__lt=timezone.now() - older_than)
    count = 0
    for message in stuck:
        message.status = Message.Status.INTERRUPTED
        message.error = message.error or "The server stopped before this answer was finished."
        message.html = render_markdown(message.content)
        message.save(update_fields=["status", "error", "html", "updated_at"])
        count += 1
    return count


# Chat turn ----------------------------------------------------------------------------------


class DuplicateMessage(Exception):
    """A message with this client id is already stored: it makes no second turn."""


@dataclass
class TurnInput:
    """What a chat request asks for, already validated."""

    messages: list[dict[str, Any]]
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    client_assistant_message_id: str = ""
    client_parent_message_id: str = ""
    # Retry: answer again the turn of this failed assistant message (which is replaced).
    retry_of: int | None = None


@dataclass
class PreparedTurn:
    conversation: Conversation
    created: bool
    assistant: Message
    user_message: Message | None
    model: str
    params: dict[str, Any]
    # `notice` events the orchestrator sends first (e.g. images the model cannot take).
    notices: list[dict[str, Any]] = field(default_factory=list)
    # Read with the turn, in the same trip to the database: the first round's prompt, whether
    # the tool planner runs, and the MCP server configs.
    prompt: list[dict[str, Any]] | None = None
    planning: bool | None = None
    tool_configs: list[Any] | None = None
    # The conversation had no user message before this turn's (its title is due after it).
    first_exchange: bool = False


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def prepare_turn(user, request: TurnInput) -> PreparedTurn:
    """Store the turn's new messages and its `streaming` assistant message, and read what the
    turn needs to start (the first prompt, the MCP server configs): one trip to the database."""
    from integrations.registry import load_configs

    prepared, saved, stored = _store_turn(user, request)
    # Read after the write transaction, so SQLite's write lock is not held for them. A new
    # conversation's history is what was just stored: no need to read it back.
    prepared.prompt = build_prompt(
        prepared.conversation,
        prepared.assistant,
        system_prompt_for(user, saved),
        history=stored if prepared.created else None,
    )
    prepared.planning = saved.planning_enabled
    prepared.tool_configs = load_configs()
    return prepared


# A turn planned before it is stored (the API): its first request goes out while the database
# stores its messages, since the prompt needs only what is already stored plus the new messages.


def can_plan(request: TurnInput) -> bool:
    """Whether the turn's first prompt can be built before its messages are stored: not a
    retry (which replaces stored messages), and no attachment references (stored as parts)."""
    if request.retry_of is not None:
        return False
    return not any(
        attachments.references_an_attachment(m.get("content"))
        for m in request.messages
        if m.get("role") != "assistant"
    )


@dataclass
class PlannedTurn:
    """What plan_turn read and decided: enough to send the first request, nothing stored."""

    decided: "_Decided"
    params: dict[str, Any]
    prompt: list[dict[str, Any]]
    planning: bool
    tool_configs: list[Any]
    user_text: str

    @property
    def model(self) -> str:
        return self.decided.model


def plan_turn(user, request: TurnInput) -> PlannedTurn:
    """Read what the turn needs to start, and check it may (404, duplicate, turn in progress),
    storing nothing: the first request can go out before store_planned_turn runs."""
    from integrations.registry import load_configs

    decided = _decide(user, request)
    new = [_unsaved_message(item) for item in decided.new]
    history: list[Message] = []
    if decided.conversation is not None:
        history = _stored_history(decided.conversation)
    upto = Message(role=Message.Role.ASSISTANT, model=decided.model)
    prompt = build_prompt(
        decided.conversation or Conversation(user=user),
        upto,
        system_prompt_for(user, decided.saved),
        history=[*history, *new],
    )
    last_user = next((m for m in reversed(new) if m.role == Message.Role.USER), None)
    return PlannedTurn(
        decided=decided,
        params=_turn_params(decided.saved, request),
        prompt=prompt,
        planning=decided.saved.planning_enabled,
        tool_configs=load_configs(),
        user_text=last_user.content if last_user is not None else "",
    )


def store_planned_turn(user, request: TurnInput, planned: PlannedTurn) -> PreparedTurn:
    """Store a planned turn, checking again in the write transaction that it may run (another
    request may have stored the same message, or started a turn, since it was planned)."""
    with transaction.atomic():
        decided = _decide(user, request, planned.decided.saved)
        prepared, _ = _write_turn(user, request, decided)
    prepared.prompt = planned.prompt
    prepared.planning = planned.planning
    prepared.tool_configs = planned.tool_configs
    return prepared


def mark_unstarted(prepared: PreparedTurn) -> None:
    """A stored turn whose task never started (its request went away): its answer is not
    left `streaming`, which would refuse every later turn of the conversation."""
    Message.objects.filter(pk=prepared.assistant.pk, status=Message.Status.STREAMING).update(
        status=Message.Status.CANCELLED, updated_at=timezone.now()
    )


def _unsaved_message(item: dict[str, Any]) -> Message:
    content = item.get("content")
    return Message(
        role=item["role"],
        content=_text_of(content),
        content_parts=content if isinstance(content, list) else None,
        tool_call_id=item.get("tool_call_id") or "",
    )


def _stored_history(conversation: Conversation, before: int | None = None) -> list[Message]:
    """The conversation's last CHAT_HISTORY_LIMIT messages (before message `before`), oldest
    first, as prompts use them."""
    messages = conversation.messages.all()
    if before is not None:
        messages = messages.filter(pk__lt=before)
    # What a prompt is made of: not the rendered HTML, reasoning or statistics.
    history = list(messages.only(*_PROMPT_FIELDS).order_by("-pk")[: settings.CHAT_HISTORY_LIMIT])
    history.reverse()
    return history


@dataclass
class _Decided:
    """What a turn request resolves to before anything is stored."""

    saved: TurnSettings
    new: list[dict[str, Any]]  # the request's messages that are stored (not the assistant's)
    conversation: Conversation | None  # None: the turn starts a new conversation
    model: str


def _decide(user, request: TurnInput, saved: TurnSettings | None = None) -> _Decided:
    """Resolve the conversation, model and settings of a turn request, and refuse it (404,
    DuplicateMessage, TurnInProgress) when it must not run. Reads only."""
    # The user's saved settings (presets app) apply unless the request body overrides them.
    if saved is None:
        saved = turn_settings_for(user)
    new = [m for m in request.messages if m.get("role") != "assistant"]
    conversation = None
    if request.session_id:
        conversation = _conversation_for_turn(request)
        if conversation is not None and conversation.user_id != user.pk:
            raise Http404("Conversation not found")
    if conversation is None:
        model = request.model or saved.model or settings.OPENROUTER_DEFAULT_MODEL
        return _Decided(saved, new, None, model)
    # Read with the conversation (see _conversation_for_turn).
    if conversation.resent:  # type: ignore[attr-defined]
        # The same message sent twice (a double click, a resend after reconnecting), also
        # while its turn is still running: it is not a second turn.
        raise DuplicateMessage(request.client_parent_message_id)
    if turns.is_running(conversation.pk) or conversation.streaming:  # type: ignore[attr-defined]
        raise turns.TurnInProgress(conversation.pk)
    model = request.model or saved.model or conversation.model or settings.OPENROUTER_DEFAULT_MODEL
    return _Decided(saved, new, conversation, model)


def _turn_params(saved: TurnSettings, request: TurnInput) -> dict[str, Any]:
    return {
        **saved.params,
        **{k: v for k, v in request.params.items() if k not in _OWN_KEYS},
    }


@transaction.atomic
def _store_turn(user, request: TurnInput) -> tuple[PreparedTurn, TurnSettings, list[Message]]:
    decided = _decide(user, request)
    prepared, stored = _write_turn(user, request, decided)
    return prepared, decided.saved, stored


def _write_turn(user, request: TurnInput, decided: _Decided) -> tuple[PreparedTurn, list[Message]]:
    """Store a decided turn: its conversation when new, its messages, its `streaming` answer."""
    new, model = decided.new, decided.model
    conversation = decided.conversation
    created = conversation is None
    if conversation is None:
        # A new conversation is stored with its title and model in the same statement.
        last_user = next((m for m in reversed(new) if m["role"] == "user"), None)
        title = _title_from(_text_of(last_user.get("content"))) if last_user else ""
        conversation = Conversation.objects.create(
            user=user, title=title, model=model, **_session_id(request.session_id)
        )
    parent = None
    user_message = None
    stored: list[Message] = []
    for index, item in enumerate(new):
        content = item.get("content")
        is_last = index == len(new) - 1
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent if item["role"] == "tool" else None,
            role=item["role"],
            content=_text_of(content),
            # Attachment references become stored `attachment` parts (404 if not the user's).
            content_parts=(
                attachments.resolve_content_parts(user, content)
                if isinstance(content, list)
                else None
            ),
            tool_call_id=item.get("tool_call_id") or "",
            tool_name=item.get("name") or "",
            client_message_id=request.client_parent_message_id if is_last else "",
        )
        stored.append(parent)
        if item["role"] == "user":
            user_message = parent
        attachments.link_to_message(parent)
    if request.retry_of is not None:
        parent = user_message = _replace_failed_answer(conversation, request.retry_of)
    assistant = Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model,
        client_message_id=request.client_assistant_message_id,
    )
    if not created:
        fields = ["model", "updated_at"]
        if not conversation.title and user_message is not None:
            conversation.title = _title_from(user_message.content)
            fields.append("title")
        conversation.model = model
        # Only the fields changed here: a title generated meanwhile must not be overwritten.
        conversation.save(update_fields=fields)
    params = _turn_params(decided.saved, request)
    prepared = PreparedTurn(conversation, created, assistant, user_message, model, params)
    prepared.first_exchange = created or not conversation.asked  # type: ignore[attr-defined]
    prepared.notices.extend(attachments.image_notices(user_message, model))
    return prepared, stored


def _conversation_for_turn(request: TurnInput) -> Conversation | None:
    """The conversation a turn continues, with what the turn checks in the same query:
    `resent` (its user message is stored already), `streaming` (an answer is still running)
    and `asked` (it has a user message: this turn is not its first exchange)."""
    messages = Message.objects.filter(conversation=OuterRef("pk"))
    resent = (
        Exists(
            messages.filter(
                client_message_id=request.client_parent_message_id, role=Message.Role.USER
            )
        )
        if request.client_parent_message_id
        else Value(False)
    )
    found = list(
        Conversation.objects.filter(session_id=request.session_id)
        .annotate(
            resent=resent,
            streaming=Exists(messages.filter(status=Message.Status.STREAMING)),
            asked=Exists(messages.filter(role=Message.Role.USER)),
        )
        .order_by()[:1]
    )
    return found[0] if found else None


def _session_id(session_id: str | None) -> dict[str, str]:
    return {"session_id": session_id} if session_id else {}


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


def system_prompt_for(user, saved: TurnSettings | None = None) -> str:
    """The user's own system prompt (from `saved`, when the caller has read the settings),
    else the configured default."""
    prompt = saved.system_prompt if saved is not None else user_system_prompt(user)
    return prompt if prompt is not None else settings.OPENROUTER_SYSTEM_PROMPT


def time_context() -> str:
    now = timezone.localtime()
    return f"Current date and time: {now:%A, %d %B %Y, %H:%M} ({settings.TIME_ZONE}, UTC{now:%z})."


_PROMPT_FIELDS = ("role", "content", "content_parts", "tool_calls", "tool_call_id")


def build_prompt(
    conversation: Conversation,
    upto: Message,
    system_prompt: str | None = None,
    history: list[Message] | None = None,
) -> list[dict[str, Any]]:
    """System prompt + a current date/time block + the stored history before `upto`.

    `system_prompt`: the one to use, and `history`: the conversation's messages before `upto`
    in order, when the caller has them already."""
    if system_prompt is None:
        system_prompt = system_prompt_for(conversation.user)
    system = "\n\n".join(p for p in (system_prompt, time_context()) if p)
    prompt: list[dict[str, Any]] = [{"role": "system", "content": system}]
    if history is None:
        history = _stored_history(conversation, before=upto.pk)
    else:
        history = history[-settings.CHAT_HISTORY_LIMIT :]
    answered = {m.tool_call_id for m in history if m.role == Message.Role.TOOL}
    # Stored attachment references become image/file parts with freshly signed URLs.
    expanded = attachments.prompt_parts(history, upto.model).parts
    for message in history:
        if message.role == Message.Role.ASSISTANT:
            entry: dict[str, Any] = {"role": "assistant", "content": message.content}
            calls = message.tool_calls or []
            # Strict providers reject tool calls without their results: only send complete pairs.
            if calls and all(c.get("id") in answered for c in calls):
                entry["tool_calls"] = calls
            elif not message.content:
                continue
            prompt.append(entry)
        elif message.role == Message.Role.TOOL:
            prompt.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
            )
        else:
            prompt.append(
                {
                    "role": message.role,
                    "content": expanded.get(message.pk) or message.content_parts or message.content,
                }
            )
    return prompt


def message_metadata(message: Message) -> dict[str, Any]:
    """The `metadata` SSE event of a stored assistant message."""
    created = message.created_at
    return {
        "role": message.role,
        "message_id": message.pk,
        "client_message_id": message.client_message_id or None,
        "status": message.status,
        "finish_reason": message.finish_reason or None,
        "model": message.model,
        "usage": message.usage,
        "generation_id": message.generation_id or None,
        "reasoning": message.reasoning or None,
        "tool_calls": message.tool_calls,
        "routing": message.routing,
        "created_at": timezone.localtime(created).isoformat(),
        "created_at_utc": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def start_turn(prepared: PreparedTurn, head: Any = None) -> Turn:
    """Start the turn as a server-side task keyed by its conversation (`head`: its first
    request, sent already; see orchestrator.HeadStart)."""
    from asgiref.sync import sync_to_async

    from chat.orchestrator import run_turn

    async def if_never_run(turn: Turn) -> None:
        # A turn stopped before its first step (Stop at once, its client gone) never read the
        # request sent ahead nor finalised its answer: close the one, and do not leave the
        # other `streaming` (that would refuse the conversation's next turns).
        if turn.started:
            return
        if head is not None:
            await head.abandon()
        await sync_to_async(mark_unstarted)(prepared)

    return turns.launch(
        prepared.conversation.pk, lambda turn: run_turn(prepared, turn, head), if_never_run
    )


def cancel_turn(conversation: Conversation) -> bool:
    return turns.cancel_turn(conversation.pk)


def _replace_failed_answer(conversation: Conversation, message_id: int) -> Message:
    """Delete a failed answer (and what descends from it); return the message it answered."""
    failed = conversation.messages.filter(
        pk=message_id,
        role=Message.Role.ASSISTANT,
        status__in=[Message.Status.ERROR, Message.Status.INTERRUPTED, Message.Status.CANCELLED],
    ).first()
    if failed is None or failed.parent_id is None:
        raise Http404("No failed answer to retry")
    asked = failed.parent
    while asked is not None and asked.role != Message.Role.USER:
        asked = asked.parent
    if asked is None:
        raise Http404("No failed answer to retry")
    # Every reply to that question goes, so the new answer is the only one.
    for reply in asked.children.all():
        reply.delete()
    return asked


def rename_conversation(user, session_id: str, title: str) -> Conversation:
    conversation = get_conversation_for_user(user, session_id)
    cleaned = " ".join(title.split())[:200]
    if cleaned:
        conversation.title = cleaned
        conversation.save(update_fields=["title"])
    return conversation


def turn_root_of(message: Message) -> int:
    """The id of the user message that opened the turn this message belongs to."""
    root = (
        Message.objects.filter(
            conversation_id=message.conversation_id, role=Message.Role.USER, pk__lte=message.pk
        )
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    return root or message.pk


def delete_message_in_turn(user, conversation: Conversation, message_id: int) -> int | None:
    """Delete one of the user's messages and its descendants (pages). Return the id of its
    turn's root message, or None when the root itself went."""
    message = conversation.messages.filter(pk=message_id).first()
    if message is None:
        raise Http404("Message not found")
    root = turn_root_of(message)
    delete_message(user, conversation.session_id, str(message.pk))
    return None if root == message.pk else root


_TITLE_PROMPT = (
    "Write a short title (2 to 6 words) for the conversation below. "
    "Reply with the title only: no quotes, no punctuation at the end."
)


async def generate_title(conversation: Conversation, root_id: int) -> Conversation | None:
    """Name a conversation after its first exchange; keep the first-line title on failure.

    A title the user has set in the meantime is never overwritten."""
    from chat import openrouter

    if await conversation.messages.filter(role=Message.Role.USER, pk__lt=root_id).aexists():
        return None
    question = await conversation.messages.filter(pk=root_id).afirst()
    answer = (
        await conversation.messages.filter(
            role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE, pk__gt=root_id
        )
        .exclude(content="")
        .order_by("pk")
        .afirst()
    )
    if question is None or answer is None:
        return None
    body = {
        "model": settings.CHAT_TITLE_MODEL or answer.model or conversation.model,
        "messages": [
            {"role": "system", "content": _TITLE_PROMPT},
            {
                "role": "user",
                "content": f"User: {question.content[:1500]}\n\nAssistant: {answer.content[:1500]}",
            },
        ],
        "max_tokens": 24,
    }
    try:
        payload = await openrouter.complete(body, read_timeout=20)
        text = payload["choices"][0]["message"]["content"] or ""
    except (openrouter.UpstreamError, KeyError, IndexError, TypeError):
        return None
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    # Titles are plain text: drop markdown emphasis, quotes and a trailing full stop.
    title = _title_from(re.sub(r"[*_`#]", "", first_line).strip(" \"'."))
    if not title:
        return None
    updated = await Conversation.objects.filter(
        pk=conversation.pk, title=_title_from(question.content)
    ).aupdate(title=title)
    if not updated:
        return None
    return await Conversation.objects.aget(pk=conversation.pk)
