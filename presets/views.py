"""Page-side endpoints of the model picker, settings and presets panels (HTMX partials).

Every view renders one partial of templates/presets/panels.html, so the chat page can include
the same partials and swap them in place.
"""

from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat.decorators import staff_required
from presets import pages, services
from presets.models import Preset

PANELS = "presets/panels.html"


@staff_required
@require_GET
def page(request):
    """A page of its own with the picker, presets and settings (linked from the chat page)."""
    return render(request, "presets/page.html", pages.page_context(request.user))


@staff_required
@require_GET
def picker(request):
    """The picker's result list for the filter form's current values."""
    # The filter form swaps only the results; anything else (the chat page's panel) gets it all.
    name = (
        "picker-results" if request.htmx and request.htmx.target == "picker-results" else "picker"
    )
    query = request.GET if request.GET else None
    return render(request, f"{PANELS}#{name}", pages.picker_context(request.user, query))


@staff_required
@require_POST
def choose_model(request):
    """Pick the model for the next message (remembered); re-renders the current-model badge
    and, out of band, the chat page's `#model-indicator`."""
    try:
        services.set_model(request.user, request.POST.get("model", ""))
    except services.SettingsError as exc:
        return render(request, f"{PANELS}#picker-error", {"error": exc.message}, status=400)
    model = pages.next_model_for(request.user)
    response = render(request, f"{PANELS}#current-model", {"current_model": model})
    response["HX-Trigger"] = "model-changed"
    return response


@staff_required
@require_POST
def toggle_favourite(request):
    model = request.POST.get("model", "")[:200]
    if not model:
        return HttpResponse("model is required", status=400)
    favourites = services.toggle_favourite(request.user, model)
    context = {"m": {"id": model}, "favourites": set(favourites)}
    return render(request, f"{PANELS}#favourite-button", context)


@staff_required
@require_http_methods(["GET", "POST"])
def settings_panel(request):
    if request.method == "GET":
        return render(request, f"{PANELS}#settings", pages.settings_panel_context(request.user))
    error = pages.save_settings_form(request.user, request.POST)
    context = pages.settings_panel_context(request.user, error=error, saved=not error)
    return render(request, f"{PANELS}#settings", context, status=400 if error else 200)


@staff_required
@require_GET
def presets_panel(request):
    return render(request, f"{PANELS}#presets", pages.presets_panel_context(request.user))


def _presets_action(request, action, notice: str):
    try:
        action()
    except services.SettingsError as exc:
        context = pages.presets_panel_context(request.user, error=exc.message)
        return render(request, f"{PANELS}#presets", context, status=exc.status)
    except Http404 as exc:
        context = pages.presets_panel_context(request.user, error=str(exc))
        return render(request, f"{PANELS}#presets", context, status=404)
    response = render(
        request, f"{PANELS}#presets", pages.presets_panel_context(request.user, notice=notice)
    )
    response["HX-Trigger"] = "settings-changed"
    return response


@staff_required
@require_POST
def save_preset(request):
    """Save the current setup under a name: a new preset, or over an existing one."""
    name = request.POST.get("name", "").strip()[:100]
    make_default = bool(request.POST.get("set_default"))

    def save():
        if Preset.objects.filter(name=name).exists():
            services.save_preset(request.user, name)
            if make_default:
                services.set_default_preset(name)
        else:
            services.create_preset(request.user, name, make_default=make_default)

    return _presets_action(request, save, f"Saved preset {name!r}.")


@staff_required
@require_POST
def apply_preset(request, name: str):
    return _presets_action(
        request, lambda: services.apply_preset(request.user, name), f"Applied {name!r}."
    )


@staff_required
@require_POST
def set_default_preset(request, name: str):
    return _presets_action(
        request, lambda: services.set_default_preset(name), f"{name!r} is now the default."
    )


@staff_required
@require_POST
def delete_preset(request, name: str):
    return _presets_action(request, lambda: services.delete_preset(name), f"Deleted {name!r}.")


@staff_required
@require_GET
def suggestions(request):
    return render(request, f"{PANELS}#suggestions", pages.suggestions_context())


@staff_required
@require_GET
async def generation_details(request, message_id: int):
    user = await request.auser()
    details = await services.generation_details(user, message_id)
    return render(request, "presets/generation_details.html", {"details": details})
