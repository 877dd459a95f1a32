"""Upload routes of the JSON API (contract/api.md)."""

import re
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from attachments import services
from attachments.uploads import is_too_large, too_large_detail

router = Router(tags=["attachments"])

_SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


class DetailOut(Schema):
    detail: str


class AttachmentOut(Schema):
    id: str
    sessionId: str | None
    mimeType: str
    sizeBytes: int
    displayUrl: str
    deliveryUrl: str
    uploadedAt: str
    expiresAt: str
    metadata: dict[str, Any]


class UploadOut(Schema):
    attachment: AttachmentOut


_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "session_id"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "session_id": {
                            "type": "string",
                            "pattern": _SESSION_ID.pattern,
                            "description": "Your conversation; a new id creates it (as the "
                            "chat stream does on a first message). Another user's id: 404.",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    response={
        201: UploadOut,
        400: DetailOut,
        404: DetailOut,
        413: DetailOut,
        415: DetailOut,
        422: DetailOut,
    },
    openapi_extra=_UPLOAD_DOC,
    summary="Upload an image (PNG, JPEG, WebP, GIF) or a PDF for a conversation",
    description=(
        "The type is decided from the file's bytes, never from its name or declared type. "
        "Files over ATTACHMENTS_MAX_SIZE_BYTES are refused (413) while they are received. "
        "`displayUrl` is a signed, expiring download URL that only works for you (session or "
        "token); `deliveryUrl` is what a model provider can fetch (a V4 signed URL on GCS). "
        'To send the file to the model, put `{"type": "attachment", "attachment_id": '
        "<id>}` (or an `image_url`/`file` part carrying one of its URLs) in a user message's "
        "content of POST /api/chat/stream."
    ),
)
def upload(request: HttpRequest):
    # Reading FILES runs the multipart parse, where the size limit is enforced.
    upload_file = request.FILES.get("file")
    if is_too_large(request):
        return Status(413, {"detail": too_large_detail()})
    session_id = request.POST.get("session_id", "")
    if upload_file is None:
        return Status(422, {"detail": "Send the file as the multipart field `file`"})
    if not _SESSION_ID.match(session_id):
        return Status(
            422, {"detail": "Send your conversation's id as the multipart field `session_id`"}
        )
    try:
        attachment = services.attach_file(request.auth, session_id, upload_file)  # type: ignore[attr-defined]
    except services.UploadRefused as refused:
        return Status(refused.status, {"detail": refused.detail})
    return Status(201, {"attachment": services.attachment_document(attachment)})


@router.get(
    "/{attachment_id}",
    response={200: UploadOut, 404: DetailOut},
    summary="One of your attachments, with freshly signed URLs",
    description="Use it to re-sign a displayUrl or deliveryUrl that has expired.",
)
def get_attachment(request: HttpRequest, attachment_id: str):
    attachment = services.get_attachment_for_user(request.auth, attachment_id)  # type: ignore[attr-defined]
    return Status(200, {"attachment": services.attachment_document(attachment)})


@router.delete(
    "/{attachment_id}",
    response={204: None, 404: DetailOut},
    summary="Delete one of your attachments and its file (e.g. removed before sending)",
)
def delete_attachment(request: HttpRequest, attachment_id: str):
    attachment = services.get_attachment_for_user(request.auth, attachment_id)  # type: ignore[attr-defined]
    services.delete_attachments([attachment])
    return Status(204, None)
