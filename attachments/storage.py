"""Where attachment files live: Django's storage API, local directory or a private GCS bucket.

Nothing here is public. Local files are served by `attachments.views.download` behind a signed,
expiring URL that also checks the owner; GCS objects get V4 signed URLs.
"""

from datetime import timedelta
from functools import cache

from django.conf import settings
from django.core import signing
from django.core.files.storage import Storage, storages
from django.urls import reverse
from storages.backends.gcloud import GoogleCloudStorage

STORAGE_ALIAS = "attachments"
_SIGNING_SALT = "attachments.download"


@cache
def _service_account(path: str):
    from google.oauth2 import service_account

    return service_account.Credentials.from_service_account_file(path)


class PrivateGCSStorage(GoogleCloudStorage):
    """A private bucket: no ACL, every URL V4-signed with the service-account key.

    Bucket I/O uses the client's own credentials (application default credentials, or anonymous
    ones against STORAGE_EMULATOR_HOST). Signing always uses the key file named by
    GOOGLE_APPLICATION_CREDENTIALS, which works offline.
    """

    def get_default_settings(self):
        defaults = super().get_default_settings()
        defaults.update(default_acl=None, querystring_auth=True)
        return defaults

    def signed_url(self, name: str, expires_in: int) -> str:
        parameters: dict = {"expiration": timedelta(seconds=expires_in), "version": "v4"}
        if settings.GOOGLE_APPLICATION_CREDENTIALS:
            parameters["credentials"] = _service_account(settings.GOOGLE_APPLICATION_CREDENTIALS)
        return self.url(name, parameters=parameters)


def get_storage() -> Storage:
    return storages[STORAGE_ALIAS]


def is_remote(storage: Storage | None = None) -> bool:
    """True when the model provider can fetch files itself (a bucket with signed URLs)."""
    return isinstance(storage or get_storage(), PrivateGCSStorage)


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=_SIGNING_SALT)


def sign_download(public_id: str, user_pk: int | None) -> str:
    """A token binding the attachment to its owner, with the time it was made."""
    return _signer().sign(f"{public_id}:{user_pk}")


class LinkExpired(Exception):
    pass


def check_download(token: str, public_id: str, user_pk: int) -> bool:
    """Whether `token` was signed by us for this attachment and owner; LinkExpired when late."""
    try:
        value = _signer().unsign(token, max_age=settings.ATTACHMENTS_URL_EXPIRY_SECONDS)
    except signing.SignatureExpired:
        raise LinkExpired from None
    except signing.BadSignature:
        return False
    return value == f"{public_id}:{user_pk}"


def app_url(public_id: str, user_pk: int | None) -> str:
    """The app's own signed download URL (a path; valid ATTACHMENTS_URL_EXPIRY_SECONDS)."""
    path = reverse("attachments:download", args=[public_id])
    return f"{path}?token={sign_download(public_id, user_pk)}"


def delivery_url(name: str, public_id: str, user_pk: int | None) -> str:
    """A URL the model provider can fetch: V4 signed for GCS, otherwise the app's own URL."""
    storage = get_storage()
    if isinstance(storage, PrivateGCSStorage):
        return storage.signed_url(name, settings.ATTACHMENTS_URL_EXPIRY_SECONDS)
    return app_url(public_id, user_pk)
