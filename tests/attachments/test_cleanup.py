import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from attachments import services
from attachments.models import Attachment
from chat.models import Message
from tests.attachments.conftest import PDF, png_bytes, upload

pytestmark = pytest.mark.django_db

PNG = png_bytes()


def make(user, session_id="c-1", data=PNG, name="photo.png", age_days: float = 0):
    attachment = services.attach_file(user, session_id, upload(name, data))
    if age_days:
        Attachment.objects.filter(pk=attachment.pk).update(
            last_used_at=timezone.now() - timedelta(days=age_days)
        )
        attachment.refresh_from_db()
    return attachment


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("cleanup_attachments", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_dry_run_lists_expired_attachments_and_changes_nothing(user, local_storage):
    old = make(user, age_days=8)
    recent = make(user, age_days=6)
    out, _ = run("--dry-run")
    assert f"Would remove {old.public_id}" in out
    assert recent.public_id not in out
    assert "Would remove 1 attachment(s)" in out
    assert Attachment.objects.count() == 2
    assert (local_storage / old.storage_name).exists()


def test_run_removes_expired_files_and_rows_and_is_idempotent(user, local_storage, settings):
    settings.ATTACHMENTS_RETENTION_DAYS = 3
    old = make(user, age_days=4)
    recent = make(user, age_days=2)
    out, _ = run()
    assert f"Removed {old.public_id} {old.storage_name}" in out
    assert not Attachment.objects.filter(pk=old.pk).exists()
    assert not (local_storage / old.storage_name).exists()
    assert (local_storage / recent.storage_name).exists()
    again, _ = run()
    assert "Removed 0 attachment(s)" in again


def test_a_failed_delete_is_hidden_kept_and_retried_next_run(user, local_storage):
    old = make(user, age_days=8)
    path = local_storage / old.storage_name
    # A real storage failure: the name now holds a non-empty directory, which cannot be deleted.
    path.unlink()
    path.mkdir()
    (path / "blocker").write_bytes(b"x")
    out, err = run()
    assert f"Could not remove {old.public_id}" in err
    assert "1 failed and will be retried" in out
    row = Attachment.objects.get(pk=old.pk)
    assert row.delete_pending is True and row.conversation_id is None
    # The owner no longer sees it, so no visible row points at a half-deleted file.
    browser = Client()
    browser.force_login(user)
    assert browser.get(services.display_url(row)).status_code == 404

    (path / "blocker").unlink()
    out, err = run()
    assert f"Removed {old.public_id}" in out and not err
    assert not Attachment.objects.exists() and not path.exists()


def test_a_failed_delete_when_the_owner_deletes_is_retried_by_the_cleanup(user, api, local_storage):
    attachment = make(user, session_id="c-2")
    path = local_storage / attachment.storage_name
    path.unlink()
    path.mkdir()
    (path / "blocker").write_bytes(b"x")
    assert api.delete("/api/chat/session/c-2").status_code == 204
    assert Attachment.objects.get().delete_pending is True
    (path / "blocker").unlink()
    out, _ = run()
    assert f"Removed {attachment.public_id}" in out
    assert not Attachment.objects.exists()


def test_deleting_a_conversation_deletes_its_files(user, api, local_storage):
    unsent = make(user, session_id="c-3")
    other = make(user, session_id="c-4")
    assert api.delete("/api/chat/session/c-3").status_code == 204
    assert not (local_storage / unsent.storage_name).exists()
    assert list(Attachment.objects.all()) == [other]


def test_deleting_a_message_deletes_the_files_it_sent_and_no_others(user, api, local_storage):
    first = make(user, session_id="c-5")
    second = make(user, session_id="c-5", data=PDF, name="a.pdf")
    conversation = first.conversation
    messages = []
    for attachment in (first, second):
        message = Message.objects.create(
            conversation=conversation,
            role="user",
            content_parts=[{"type": "attachment", "attachment_id": attachment.public_id}],
        )
        services.link_to_message(message)
        messages.append(message)
    response = api.delete(f"/api/chat/session/c-5/messages/{messages[0].pk}")
    assert response.status_code == 204
    assert not (local_storage / first.storage_name).exists()
    assert list(Attachment.objects.all()) == [second]
    assert (local_storage / second.storage_name).exists()


def test_another_users_delete_touches_no_files(user, other_user, local_storage):
    attachment = make(user, session_id="c-6")
    from chat.services import create_api_token

    token = create_api_token(other_user)
    response = Client().delete(
        "/api/chat/session/c-6", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 404
    assert (local_storage / attachment.storage_name).exists()
    assert Attachment.objects.filter(pk=attachment.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_serve_schedule_runs_the_cleanup_in_the_background(user, local_storage):
    import threading

    old = make(user, age_days=8)
    assert services.start_cleanup_schedule(0) is None
    stop = services.start_cleanup_schedule(0.01)
    assert isinstance(stop, threading.Event)
    try:
        for _ in range(500):
            if not Attachment.objects.filter(pk=old.pk).exists():
                break
            threading.Event().wait(0.01)
    finally:
        stop.set()
    assert not Attachment.objects.filter(pk=old.pk).exists()
    assert not (local_storage / old.storage_name).exists()


def test_admin_lists_owner_size_type_conversation_and_expiry(user, admin_client):
    attachment = make(user, session_id="c-7")
    response = admin_client.get("/admin/attachments/attachment/")
    assert response.status_code == 200
    page = response.content.decode()
    for column in ("column-user", "column-size_bytes", "column-mime_type"):
        assert column in page
    assert "column-conversation" in page and "column-expires_at" in page
    assert attachment.public_id in page and "image/png" in page and "alice" in page


def test_files_of_a_deleted_user_or_admin_deleted_conversation_go_in_the_next_run(
    make_user, user, local_storage
):
    leaver = make_user("leaver")
    theirs = make(leaver, session_id="c-8")
    mine = make(user, session_id="c-9")
    kept = make(user, session_id="c-10")
    leaver.delete()
    # Deleted in the admin (plain ORM delete), not through the chat services.
    mine.conversation.delete()
    out, _ = run()
    assert f"Removed {theirs.public_id}" in out and f"Removed {mine.public_id}" in out
    assert list(Attachment.objects.all()) == [kept]
    assert not (local_storage / theirs.storage_name).exists()
    assert not (local_storage / mine.storage_name).exists()
