from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


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


@staff_member_required
def home(request):
    return render(request, "chat/home.html")
