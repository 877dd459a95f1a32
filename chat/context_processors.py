from django.conf import settings


def product(request):
    return {"chat_configured": bool(settings.OPENROUTER_API_KEY)}
