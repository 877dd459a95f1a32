"""Attachment domain functions shared by the API, the pages, the chat turn and the commands."""

import base64
import hashlib
import logging
import re
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, connections, transaction
from django.http import Http404
from django.utils import timezone

from attachments import storage as files
from attachments.models import Attachment
from attachments.uploads import Sniffed, contains_markup, sniff_type, too_large_detail
from chat.models import Conversation, Message

log = logging.getLogger(__name__)

_SNIFF_BYTES = 64 * 1024
_FILENAME_LENGTH = 255


class UploadRefused(Exception):
    """An upload the API answers with `status` and `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# Access -------------------------------------------------------------------------------------


def get_attachment_for_user(user, public_id: str) -> Attachment:
    """The one access helper: the user's attachment, or 404 for anything else."""
    try:
        return Attachment.objects.for_user(user).get(public_id=public_id)
    except Attachment.DoesNotExist:
        raise Http404("Attachment not found") from None


def conversation_for_upload(user, session_id: str) -> Conversation:
    """The user's conversation with this id, created when the id is new (as the chat stream
    does on a first message); another user's id is a 404."""
    conversation = Conversation.objects.filter(session_id=session_id).first()
    if conversation is None:
        try:
            with transaction.atomic():
                return Conversation.objects.create(user=user, session_id=session_id)
        except IntegrityError:
            # Created at the same moment by another request: fall through to the owner check.
            conversation = Conversation.objects.get(session_id=session_id)
    if conversation.user_id != user.pk:
        raise Http404("Conversation not found")
    return conversation


# Upload -------------------------------------------------------------------------------------


_ALL_KINDS = frozenset({Attachment.Kind.IMAGE, Attachment.Kind.PDF})


def attach_file(user, session_id: str, upload: UploadedFile) -> Attachment:
    """Check and store an uploaded file for the user's conversation.

    The type comes from the bytes; the stored name is ours; the client's filename is kept as
    metadata only.
    """
    sniffed = _checked_type(upload, _ALL_KINDS)
    conversation = conversation_for_upload(user, session_id)
    return _store(user.pk, conversation, upload, sniffed, upload.name or "")


def attach_generated_image(conversation: Conversation, data: bytes, stem: str) -> Attachment:
    """Store image bytes produced on the server (an image an MCP tool returned) as an
    attachment of the conversation, owned by its user.

    The bytes pass the same checks as an upload (size, type from the magic bytes, no HTML/SVG
    markup) and land in the same storage under a generated name; `stem` becomes the filename
    shown (with the sniffed type's extension). UploadRefused when the bytes are refused.
    """
    file = ContentFile(data)
    sniffed = _checked_type(file, {Attachment.Kind.IMAGE})
    return _store(conversation.user_id, conversation, file, sniffed, f"{stem}.{sniffed.extension}")


def _checked_type(file: File, kinds: Collection[str]) -> Sniffed:
    """The type the file's bytes prove, when it is one of `kinds`; UploadRefused otherwise."""
    if not file.size:
        raise UploadRefused(400, "The file is empty")
    if file.size > settings.ATTACHMENTS_MAX_SIZE_BYTES:
        raise UploadRefused(413, too_large_detail())
    file.seek(0)
    sniffed = sniff_type(file.read(_SNIFF_BYTES))
    if sniffed is None or sniffed.kind not in kinds:
        allowed = "PNG, JPEG, WebP and GIF images"
        if Attachment.Kind.PDF in kinds:
            allowed = "PNG, JPEG, WebP, GIF and PDF"
        raise UploadRefused(415, f"Unsupported file type: only {allowed}")
    if sniffed.kind == Attachment.Kind.IMAGE and contains_markup(file):
        raise UploadRefused(415, "Unsupported file type: the image contains HTML or SVG markup")
    return sniffed


def _store(
    user_pk: int, conversation: Conversation, file: File, sniffed: Sniffed, filename: str
) -> Attachment:
    """Write checked bytes to the attachments storage and record them."""
    digest = hashlib.sha256()
    file.seek(0)
    for chunk in file.chunks():
        digest.update(chunk)
    attachment = Attachment(
        user_id=user_pk,
        conversation=conversation,
        original_name=filename[-_FILENAME_LENGTH:],
        mime_type=sniffed.mime_type,
        kind=sniffed.kind,
        size_bytes=file.size,
        sha256=digest.hexdigest(),
        width=sniffed.width,
        height=sniffed.height,
    )
    # A generated name: the user id keeps prefixes apart, the random id makes it unguessable.
    name = f"u{user_pk}/{attachment.public_id}.{sniffed.extension}"
    file.seek(0)
    attachment.storage_name = files.get_storage().save(name, file)
    try:
        attachment.save()
    except Exception:
        files.get_storage().delete(attachment.storage_name)
        raise
    return attachment


# Documents and URLs -------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def display_url(attachment: Attachment) -> str:
    """The URL pages and API clients use to show the file: the app's signed, expiring,
    owner-checked download URL (same origin, so a strict CSP holds)."""
    return files.app_url(attachment.public_id, attachment.user_id)


def delivery_url(attachment: Attachment) -> str:
    """A URL a remote service can fetch: V4-signed for GCS; the app's own URL for local files."""
    return files.delivery_url(attachment.storage_name, attachment.public_id, attachment.user_id)


def attachment_document(attachment: Attachment) -> dict[str, Any]:
    """The API's attachment document (contract/api.md), with freshly signed URLs."""
    url_expires = timezone.now() + timedelta(seconds=settings.ATTACHMENTS_URL_EXPIRY_SECONDS)
    metadata: dict[str, Any] = {
        "filename": attachment.original_name,
        "kind": attachment.kind,
        "urlExpiresAt": _iso(url_expires),
    }
    if attachment.width and attachment.height:
        metadata.update(width=attachment.width, height=attachment.height)
    return {
        "id": attachment.public_id,
        "sessionId": attachment.conversation.session_id if attachment.conversation else None,
        "mimeType": attachment.mime_type,
        "sizeBytes": attachment.size_bytes,
        "displayUrl": display_url(attachment),
        "deliveryUrl": delivery_url(attachment),
        "uploadedAt": _iso(attachment.created_at),
        "expiresAt": _iso(attachment.expires_at),
        "metadata": metadata,
    }


@dataclass
class AttachmentView:
    """What a page needs to show one attachment of a message (URLs freshly signed)."""

    id: str
    kind: str
    mime_type: str
    filename: str
    size_bytes: int
    url: str
    width: int | None = None
    height: int | None = None


def attachments_for_messages(messages: Iterable[Message]) -> dict[int, list[AttachmentView]]:
    """The attachments each message references, by message pk, with fresh signed URLs.

    One query for the whole history; attachments deleted since are left out.
    """
    wanted: dict[int, list[str]] = {}
    for message in messages:
        ids = referenced_ids(message.content_parts)
        if ids:
            wanted[message.pk] = ids
    if not wanted:
        return {}
    found = {
        a.public_id: a
        for a in Attachment.objects.filter(
            public_id__in={i for ids in wanted.values() for i in ids}, delete_pending=False
        )
    }
    return {pk: [_view(found[i]) for i in ids if i in found] for pk, ids in wanted.items()}


def annotate_messages(messages: Iterable[Message]) -> None:
    """Set `attachment_views` (a list of AttachmentView) on each message, for the templates
    (`attachments/message_attachments.html`); one query for the whole page."""
    messages = list(messages)
    views = attachments_for_messages(messages)
    for message in messages:
        message.attachment_views = views.get(message.pk, [])  # type: ignore[attr-defined]


def _view(attachment: Attachment) -> AttachmentView:
    return AttachmentView(
        id=attachment.public_id,
        kind=attachment.kind,
        mime_type=attachment.mime_type,
        filename=attachment.original_name,
        size_bytes=attachment.size_bytes,
        url=display_url(attachment),
        width=attachment.width,
        height=attachment.height,
    )


def open_for_download(attachment: Attachment):
    return files.get_storage().open(attachment.storage_name, "rb")


# Chat messages ------------------------------------------------------------------------------

ATTACHMENT_PART = "attachment"


def referenced_ids(parts: Any) -> list[str]:
    """The attachment ids a stored message's content parts reference, in order."""
    if not isinstance(parts, list):
        return []
    return [
        p["attachment_id"]
        for p in parts
        if isinstance(p, dict) and p.get("type") == ATTACHMENT_PART and p.get("attachment_id")
    ]


# Our URLs end in the id: `/attachments/<id>/` (displayUrl) or `/<bucket>/u<pk>/<id>.<ext>`.
_URL_ID = re.compile(r"(?:^|/)(att_[0-9a-f]{24})(?:/|\.(?:png|jpg|gif|webp|pdf))?$")


def _id_from_url(url: str) -> str | None:
    """An attachment id from one of our displayUrl / deliveryUrl values, else None."""
    if url.startswith("data:"):
        return None
    match = _URL_ID.search(urlsplit(url).path)
    return match.group(1) if match else None


def _reference_of(part: dict[str, Any]) -> str | None:
    """The attachment a content part points at, if it points at one of ours."""
    if part.get("type") == ATTACHMENT_PART:
        return str(part.get("attachment_id") or part.get("id") or "")
    if part.get("attachment_id"):
        return str(part["attachment_id"])
    for key, inner in (("image_url", "url"), ("file", "file_data")):
        value = part.get(key)
        url = value.get(inner) if isinstance(value, dict) else None
        if isinstance(url, str):
            found = _id_from_url(url)
            if found:
                return found
    return None


def references_an_attachment(content: Any) -> bool:
    """Whether a chat request's message content points at one of our attachments."""
    return isinstance(content, list) and any(
        isinstance(part, dict) and _reference_of(part) is not None for part in content
    )


def resolve_content_parts(user, parts: list[Any]) -> list[Any]:
    """Turn the attachment references of a chat request into stored `attachment` parts.

    A part references an attachment by id (`{"type": "attachment", "attachment_id": ...}`, or
    any part with an `attachment_id` key) or by one of its URLs (an `image_url` / `file` part
    whose URL is its displayUrl or deliveryUrl). Another user's (or an unknown) id is a 404,
    raised before anything is stored or sent. Other parts are kept as they are.
    """
    resolved: list[Any] = []
    for part in parts:
        ref = _reference_of(part) if isinstance(part, dict) else None
        if ref is None:
            resolved.append(part)
            continue
        get_attachment_for_user(user, ref)
        resolved.append({"type": ATTACHMENT_PART, "attachment_id": ref})
    return resolved


def link_to_message(message: Message) -> None:
    """Remember the user message that first sent these attachments (deleting it deletes them)."""
    ids = referenced_ids(message.content_parts)
    if ids:
        Attachment.objects.filter(public_id__in=ids, message__isnull=True).update(message=message)


@dataclass
class PromptParts:
    """Content parts ready for the model, by message pk, and what had to be left out."""

    parts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    dropped_images: int = 0


def _data_url(attachment: Attachment) -> str:
    with files.get_storage().open(attachment.storage_name, "rb") as handle:
        encoded = base64.b64encode(handle.read()).decode()
    return f"data:{attachment.mime_type};base64,{encoded}"


def _model_part(attachment: Attachment) -> dict[str, Any]:
    remote = files.is_remote()
    if attachment.kind == Attachment.Kind.IMAGE:
        # The provider cannot reach this machine: local files go inline.
        url = delivery_url(attachment) if remote else _data_url(attachment)
        return {"type": "image_url", "image_url": {"url": url}}
    data = delivery_url(attachment) if remote else _data_url(attachment)
    return {
        "type": "file",
        "file": {"filename": attachment.original_name or "document.pdf", "file_data": data},
    }


def image_input_supported(model: str) -> bool:
    """False only when the catalogue knows the model and it takes no image input."""
    from presets.catalogue import input_modalities

    modalities = input_modalities(model)
    return modalities is None or "image" in modalities


def prompt_parts(messages: Iterable[Message], model: str) -> PromptParts:
    """Expand stored `attachment` parts into OpenRouter parts, signing URLs afresh.

    Images become `image_url` parts (a V4 signed URL for GCS, an inline data URL for local
    files), PDFs `file` parts. A model without image input gets a text note in place of each
    image. Everything sent counts as used now, for retention. Tool results are left out: their
    images are for the person and the model gets their text only.
    """
    result = PromptParts()
    wanted = {
        m.pk: m.content_parts
        for m in messages
        if m.role != Message.Role.TOOL and referenced_ids(m.content_parts)
    }
    if not wanted:
        return result
    ids = {i for parts in wanted.values() for i in referenced_ids(parts)}
    found = {
        a.public_id: a for a in Attachment.objects.filter(public_id__in=ids, delete_pending=False)
    }
    images_ok = image_input_supported(model)
    used: set[int] = set()
    for pk, parts in wanted.items():
        expanded: list[dict[str, Any]] = []
        for part in parts or []:
            if not (isinstance(part, dict) and part.get("type") == ATTACHMENT_PART):
                expanded.append(part)
                continue
            attachment = found.get(part.get("attachment_id", ""))
            if attachment is None:
                expanded.append({"type": "text", "text": "[attachment no longer available]"})
            elif attachment.kind == Attachment.Kind.IMAGE and not images_ok:
                result.dropped_images += 1
                name = attachment.original_name or "image"
                expanded.append(
                    {"type": "text", "text": f"[image {name} left out: model takes no images]"}
                )
            else:
                try:
                    expanded.append(_model_part(attachment))
                except OSError:
                    log.warning("attachment %s unreadable", attachment.public_id, exc_info=True)
                    expanded.append({"type": "text", "text": "[attachment unreadable]"})
                    continue
                used.add(attachment.pk)
        result.parts[pk] = expanded
    if used:
        Attachment.objects.filter(pk__in=used).update(last_used_at=timezone.now())
    return result


def image_notices(user_message: Message | None, model: str) -> list[dict[str, Any]]:
    """A `notice` for a turn whose new message carries images the model cannot take."""
    if user_message is None or image_input_supported(model):
        return []
    ids = referenced_ids(user_message.content_parts)
    if not ids:
        return []
    images = Attachment.objects.filter(
        public_id__in=ids, kind=Attachment.Kind.IMAGE, delete_pending=False
    ).count()
    if not images:
        return []
    return [
        {
            "type": "attachments_dropped",
            "message": f"{model} does not accept images; {images} image(s) were left out of "
            "this message. Pick a model with image input to include them.",
            "count": images,
        }
    ]


# Deletion and retention ---------------------------------------------------------------------


def _remove(attachment: Attachment) -> bool:
    """Delete the file, then the row. When the file cannot be deleted, keep the row (hidden,
    `delete_pending`) so the next cleanup retries; never a row pointing at nothing visible."""
    try:
        files.get_storage().delete(attachment.storage_name)
    except Exception:
        log.warning("could not delete attachment file %s", attachment.storage_name, exc_info=True)
        Attachment.objects.filter(pk=attachment.pk).update(
            delete_pending=True, conversation=None, message=None
        )
        return False
    attachment.delete()
    return True


def delete_attachments(attachments: Iterable[Attachment]) -> int:
    return sum(1 for a in list(attachments) if _remove(a))


def delete_for_conversation(conversation: Conversation) -> int:
    """Delete every file of a conversation (uploaded to it or sent in one of its messages)."""
    return delete_attachments(
        Attachment.objects.filter(conversation=conversation)
        | Attachment.objects.filter(message__conversation=conversation)
    )


def delete_for_messages(message_pks: Iterable[int]) -> int:
    """Delete the files sent with these messages (and the messages that descend from them)."""
    frontier = list(message_pks)
    every = set(frontier)
    while frontier:
        frontier = list(Message.objects.filter(parent_id__in=frontier).values_list("pk", flat=True))
        every.update(frontier)
    return delete_attachments(Attachment.objects.filter(message_id__in=every))


@dataclass
class CleanupReport:
    removed: list[Attachment] = field(default_factory=list)
    failed: list[Attachment] = field(default_factory=list)


def cleanup_attachments(*, dry_run: bool = False, now: datetime | None = None) -> CleanupReport:
    """Remove attachments unused for ATTACHMENTS_RETENTION_DAYS and retry failed deletions.

    Idempotent; safe to run from several schedulers at once (a file already gone is fine).
    """
    report = CleanupReport()
    due = Attachment.objects.due_for_cleanup(now or timezone.now()).order_by("pk")
    for attachment in due.iterator():
        if dry_run or _remove(attachment):
            report.removed.append(attachment)
        else:
            report.failed.append(attachment)
    return report


def start_cleanup_schedule(interval_seconds: float) -> threading.Event | None:
    """Run `cleanup_attachments` every `interval_seconds` in a daemon thread (used by `serve`).

    Returns an event that stops the thread when set; None when the interval is not positive.
    """
    if interval_seconds <= 0:
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_seconds):
            try:
                report = cleanup_attachments()
                if report.removed or report.failed:
                    log.info(
                        "attachment cleanup: %d removed, %d failed",
                        len(report.removed),
                        len(report.failed),
                    )
            except Exception:
                log.exception("attachment cleanup failed")
            finally:
                # An hourly job keeps no connection between its runs.
                connections.close_all()

    threading.Thread(target=loop, name="attachment-cleanup", daemon=True).start()
    return stop
