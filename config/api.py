"""The JSON + SSE API (contract/api.md): one NinjaAPI, a router per app, JSON errors."""

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.security import HttpBearer

from chat import services
from chat.openrouter import UpstreamError
from chat.turns import TurnInProgress

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    middleware = CsrfViewMiddleware(lambda r: HttpResponse())
    request.csrf_processing_done = False  # type: ignore[attr-defined]
    middleware.process_request(request)
    return middleware.process_view(request, lambda r: HttpResponse(), (), {})


class BearerOrSession(HttpBearer):
    """`Authorization: Bearer <token>` or a staff session (with CSRF on unsafe methods)."""

    def __call__(self, request: HttpRequest):
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return services.authenticate_token(token.strip())
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_staff):
            return None
        if request.method not in _SAFE_METHODS and _csrf_failure(request) is not None:
            raise HttpError(
                403, "CSRF check failed: send the csrftoken cookie's value as X-CSRFToken"
            )
        return user

    def authenticate(self, request: HttpRequest, token: str):  # pragma: no cover - unused
        return services.authenticate_token(token)


api = NinjaAPI(
    title="Chat API",
    version="1",
    description="JSON + SSE API of the chat product (see contract/api.md).",
    auth=BearerOrSession(),
    urls_namespace="api",
    docs_url=None,
)


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    return api.create_response(
        request, {"detail": "Authentication required: log in or send a Bearer token"}, status=401
    )


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    return api.create_response(request, {"detail": "Request body too large"}, status=413)


@api.exception_handler(UpstreamError)
def _upstream(request, exc: UpstreamError):
    response = api.create_response(request, {"detail": exc.message}, status=exc.status)
    if exc.retry_after:
        response["Retry-After"] = exc.retry_after
    return response


@api.exception_handler(services.DuplicateMessage)
def _duplicate(request, exc):
    return api.create_response(
        request,
        {"detail": "This message was already received (same client message id)"},
        status=409,
    )


@api.exception_handler(TurnInProgress)
def _busy(request, exc):
    return api.create_response(
        request, {"detail": "A reply is already being generated in this conversation"}, status=409
    )


api.add_router("/chat/", "chat.api.router")
api.add_router("/chat/", "integrations.api.approvals_router")
api.add_router("/models", "presets.api.catalogue_router")
api.add_router("/settings", "presets.api.settings_router")
api.add_router("/presets", "presets.api.presets_router")
api.add_router("/suggestions", "presets.api.suggestions_router")
api.add_router("/mcp", "integrations.api.mcp_router")
api.add_router("/uploads", "attachments.api.router")
