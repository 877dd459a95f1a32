import time

import pytest
from django.core import signing
from django.test import Client

from attachments import services
from attachments.storage import _SIGNING_SALT
from tests.attachments.conftest import PDF, png_bytes, upload

pytestmark = pytest.mark.django_db

PNG = png_bytes()


@pytest.fixture
def attachment(user):
    return services.attach_file(user, "chat-1", upload("photo.png", PNG))


def browser_for(user) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def test_owner_downloads_through_the_signed_url(user, attachment):
    url = services.display_url(attachment)
    response = browser_for(user).get(url)
    assert response.status_code == 200
    assert response.getvalue() == PNG
    assert response["Content-Type"] == "image/png"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["Cache-Control"] == "private, max-age=300"


def test_api_clients_download_with_their_bearer_token(api, attachment):
    response = api.get(services.display_url(attachment))
    assert response.status_code == 200
    assert response.getvalue() == PNG


def test_pdfs_download_as_files(user):
    pdf = services.attach_file(user, "chat-1", upload("report.pdf", PDF))
    response = browser_for(user).get(services.display_url(pdf))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("attachment;")
    assert 'filename="report.pdf"' in response["Content-Disposition"]


def test_another_user_gets_404_even_with_the_owners_signed_url(attachment, other_user):
    response = browser_for(other_user).get(services.display_url(attachment))
    assert response.status_code == 404


def test_another_users_attachment_is_404_through_the_access_helper(attachment, other_user):
    from django.http import Http404

    with pytest.raises(Http404):
        services.get_attachment_for_user(other_user, attachment.public_id)


def test_anonymous_request_with_a_valid_url_is_404(attachment):
    assert Client().get(services.display_url(attachment)).status_code == 404


@pytest.mark.parametrize("token", ["", "garbage", "att_x:1:abc:def"])
def test_missing_or_forged_signature_is_404(user, attachment, token):
    url = f"/attachments/{attachment.public_id}/?token={token}"
    assert browser_for(user).get(url).status_code == 404


def test_signature_for_another_attachment_does_not_open_this_one(user, attachment):
    second = services.attach_file(user, "chat-1", upload("b.png", PNG))
    token = services.display_url(second).split("token=")[1]
    url = f"/attachments/{attachment.public_id}/?token={token}"
    assert browser_for(user).get(url).status_code == 404


def test_expired_link_is_410_and_a_fresh_document_has_a_working_url(user, attachment, settings):
    class SignedEarlier(signing.TimestampSigner):
        def timestamp(self):
            return signing.b62_encode(
                int(time.time()) - settings.ATTACHMENTS_URL_EXPIRY_SECONDS - 5
            )

    old = SignedEarlier(salt=_SIGNING_SALT).sign(f"{attachment.public_id}:{user.pk}")
    browser = browser_for(user)
    expired = browser.get(f"/attachments/{attachment.public_id}/?token={old}")
    assert expired.status_code == 410
    fresh = services.attachment_document(attachment)["displayUrl"]
    assert browser.get(fresh).status_code == 200


def test_file_missing_from_storage_is_404_not_500(user, attachment, local_storage):
    (local_storage / attachment.storage_name).unlink()
    assert browser_for(user).get(services.display_url(attachment)).status_code == 404


def test_history_views_carry_fresh_urls_and_skip_deleted_attachments(user, attachment):
    from chat.models import Message

    gone = services.attach_file(user, "chat-1", upload("gone.png", PNG))
    message = Message.objects.create(
        conversation=attachment.conversation,
        role="user",
        content="look",
        content_parts=[
            {"type": "text", "text": "look"},
            {"type": "attachment", "attachment_id": attachment.public_id},
            {"type": "attachment", "attachment_id": gone.public_id},
        ],
    )
    services.delete_attachments([gone])
    views = services.attachments_for_messages([message])
    [view] = views[message.pk]
    assert view.id == attachment.public_id and view.kind == "image"
    assert browser_for(user).get(view.url).status_code == 200


def test_partials_render_thumbnails_chips_and_a_removable_composer_chip(user, attachment):
    from django.template.loader import render_to_string

    from chat.models import Message

    pdf = services.attach_file(user, "chat-1", upload("report.pdf", PDF))
    message = Message.objects.create(
        conversation=attachment.conversation,
        role="user",
        content_parts=[
            {"type": "attachment", "attachment_id": attachment.public_id},
            {"type": "attachment", "attachment_id": pdf.public_id},
        ],
    )
    services.annotate_messages([message])
    html = render_to_string(
        "attachments/message_attachments.html",
        {"attachments": message.attachment_views},  # type: ignore[attr-defined]
    )
    assert f'src="{services.display_url(attachment)}"'.replace("&", "&amp;") in html
    assert 'width="2" height="3"' in html
    assert "report.pdf" in html and 'class="attachment-chip"' in html
    assert "<script" not in html and "style=" not in html

    chip = render_to_string(
        "attachments/composer_chip.html",
        {"attachment": services.attachment_document(attachment)},
    )
    assert f'data-remove-attachment="{attachment.public_id}"' in chip
    assert f'value="{attachment.public_id}"' in chip
    assert "<script" not in chip and "style=" not in chip
