"""The download view behind displayUrl: signed, expiring, and only for the owner."""

from django.contrib.auth.decorators import login_not_required
from django.http import FileResponse, Http404, HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from attachments import services
from attachments.storage import LinkExpired, check_download
from chat.services import authenticate_token


def _requester(request: HttpRequest):
    """The session user, or the owner of a Bearer token (API clients fetch displayUrl too)."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return authenticate_token(token.strip())
        return None
    user = request.user
    return user if user.is_authenticated and user.is_active else None


# The signature is the credential that expires; the session or token proves who is asking, so a
# leaked link is useless to anyone else. Authentication is done here (Bearer tokens included),
# hence no login redirect.
@login_not_required
@require_safe
def download(request: HttpRequest, public_id: str):
    user = _requester(request)
    if user is None:
        raise Http404("Attachment not found")
    attachment = services.get_attachment_for_user(user, public_id)
    try:
        valid = check_download(request.GET.get("token", ""), public_id, user.pk)
    except LinkExpired:
        return JsonResponse({"detail": "This link has expired; fetch a fresh URL"}, status=410)
    if not valid:
        raise Http404("Attachment not found")
    try:
        handle = services.open_for_download(attachment)
    except FileNotFoundError:
        raise Http404("Attachment not found") from None
    response = FileResponse(
        handle,
        content_type=attachment.mime_type,
        as_attachment=attachment.kind == "pdf",
        filename=attachment.original_name or f"{public_id}.{attachment.mime_type.split('/')[-1]}",
    )
    response["Cache-Control"] = "private, max-age=300"
    # Even if a browser rendered it as a document, nothing in it may run.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
