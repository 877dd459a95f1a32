"""Encrypt small secrets at rest (MCP bearer tokens) with Fernet.

The key is FIELD_ENCRYPTION_KEY (a Fernet key, or any string, which is hashed into one), else
derived from SECRET_KEY. Rotating the key makes stored secrets unreadable: they then read as empty
and must be entered again.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    material = settings.FIELD_ENCRYPTION_KEY or f"field-encryption:{settings.SECRET_KEY}"
    key = base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest())
    return Fernet(key)


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode() if plain else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        return ""
