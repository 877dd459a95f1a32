"""Attachment fixtures: files of each type, private local storage per test, a real GCS emulator."""

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import private_attachments_storage

BUCKET = "chat-attachments-test"


def png_bytes(width: int = 2, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


JPEG = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    + b"\xff\xc0\x00\x0b\x08\x00\x04\x00\x05\x01\x01\x11\x00"
    + b"\xff\xd9"
)
GIF = (
    b"GIF89a\x07\x00\x05\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
WEBP = (
    b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00"
    b"\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
)
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def upload(name: str, data: bytes, content_type: str = "application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Users are made in nearly every test here; a slow hash only costs time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def local_storage(settings, tmp_path) -> Path:
    """Each test gets its own private directory as the attachments storage."""
    return private_attachments_storage(settings, tmp_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """A real gcp-storage-emulator on a free loopback port, in memory, with one bucket."""
    port = _free_port()
    executable = shutil.which("gcp-storage-emulator") or str(
        Path(sys.executable).parent / "gcp-storage-emulator"
    )
    process = subprocess.Popen(
        [executable, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory",
         f"--default-bucket={BUCKET}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("gcp-storage-emulator did not start") from None
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=5)


@pytest.fixture(scope="session")
def service_account_file(tmp_path_factory) -> Path:
    """A locally generated service-account key: signs V4 URLs offline, as a real key does."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "chat-test",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "attachments@chat-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = tmp_path_factory.mktemp("gcs") / "service-account.json"
    path.write_text(json.dumps(info))
    return path


@pytest.fixture
def gcs_storage(settings, gcs_emulator, service_account_file, monkeypatch):
    """Point the attachments storage at the emulator's bucket (as GCS_BUCKET_NAME would)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    settings.GCS_BUCKET_NAME = BUCKET
    settings.GOOGLE_APPLICATION_CREDENTIALS = str(service_account_file)
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "attachments.storage.PrivateGCSStorage",
            "OPTIONS": {"bucket_name": BUCKET, "project_id": "chat-test"},
        },
    }
    from attachments.storage import get_storage

    return get_storage()


@pytest.fixture
def staff_browser(user):
    """A logged-in staff browser session that enforces CSRF like a real browser."""
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    return browser
