"""The chat pages: thin views over chat.services and chat.history."""

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from chat import history, services, turns
from chat.decorators import staff_required
from chat.models import Conversation, Message, new_session_id
from presets.pages import next_model_for
from presets.services import apply_default_preset, list_suggestions


@login_not_required
@require_GET
def health(request):
    return JsonResponse(
        {
            "status": "ok",
            "default_model": settings.OPENROUTER_DEFAULT_MODEL,
            "active_model": settings.OPENROUTER_DEFAULT_MODEL,
        }
    )


def _page_context(request, conversation: Conversation | None) -> dict:
    messages: list[Message] = []
    has_more = False
    if conversation is not None:
        messages, has_more = history.page_of_messages(conversation)
        history.prepare_for_page(messages, request.user.pk)
        history.show_live_text(messages, turns.get_turn(conversation.pk))
    return {
        "conversation": conversation,
        "session_id": conversation.session_id if conversation else "",
        # A new chat's id is chosen now, so files can be uploaded before the first message.
        "new_session_id": new_session_id(),
        "conversations": history.list_conversations(request.user),
        "turns": history.group_turns(messages),
        "has_more": has_more,
        "oldest_id": messages[0].pk if messages else None,
        "running": any(m.status == "streaming" for m in messages),
        "model": next_model_for(request.user, conversation),
        "suggestions": list_suggestions(),
        "max_message_chars": services.MAX_MESSAGE_CHARS,
    }


@staff_required
@require_GET
def home(request):
    # A new conversation starts from the default preset, when there is one.
    apply_default_preset(request.user)
    return render(request, "chat/chat.html", _page_context(request, None))


@staff_required
@require_GET
def model_indicator(request):
    """The header's model badge, redrawn after the picker or a preset changed the model."""
    context = {"model": next_model_for(request.user)}
    return render(request, "chat/chat.html#model-indicator", context)


@staff_required
@require_GET
def conversation(request, session_id: str):
    found = services.get_conversation_for_user(request.user, session_id)
    return render(request, "chat/chat.html", _page_context(request, found))


@staff_required
@require_GET
def older_messages(request, session_id: str):
    """Earlier messages for scrolling back, as turn partials plus the next sentinel."""
    found = services.get_conversation_for_user(request.user, session_id)
    try:
        before = int(request.GET.get("before", ""))
    except ValueError:
        return HttpResponse("before must be a message id", status=400)
    messages, has_more = history.page_of_messages(found, before=before)
    history.prepare_for_page(messages, request.user.pk)
    context = {
        "conversation": found,
        "session_id": found.session_id,
        "turns": history.group_turns(messages),
        "has_more": has_more,
        "oldest_id": messages[0].pk if messages else None,
    }
    return render(request, "chat/older.html", context)


@staff_required
@require_POST
def rename(request, session_id: str):
    found = services.rename_conversation(request.user, session_id, request.POST.get("title", ""))
    return render(
        request, "chat/chat.html#conversation-item", {"item": found, "conversation": found}
    )


@staff_required
@require_POST
def delete(request, session_id: str):
    found = services.get_conversation_for_user(request.user, session_id)
    services.delete_conversation(request.user, found.session_id)
    if request.htmx:
        return HttpResponseClientRedirect("/")
    return redirect("chat:home")


@staff_required
@require_POST
def delete_message(request, session_id: str, message_id: int):
    """Delete a message and its descendants; answer with its turn as it now stands."""
    found = services.get_conversation_for_user(request.user, session_id)
    root_id = services.delete_message_in_turn(request.user, found, message_id)
    view = history.turn_messages(found.pk, root_id) if root_id else None
    if view is None:
        return HttpResponse("")
    history.prepare_for_page(view.messages, request.user.pk)
    context = {"turn": view, "session_id": found.session_id, "conversation": found}
    return render(request, "chat/chat.html#turn", context)
