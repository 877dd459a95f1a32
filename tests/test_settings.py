"""Settings come from the environment; a malformed value stops the start and names itself."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_settings(tmp_path, **env: str) -> subprocess.CompletedProcess:
    """Import the settings module alone in a fresh interpreter with this environment."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENROUTER_", "DATABASE_URL", "REDIS_URL"))
    }
    environment.update({"DATA_DIR": str(tmp_path)})
    environment.update(env)
    code = (
        "import config.settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'], "
        "s.OPENROUTER_READ_TIMEOUT, "
        "s.DATABASES['default'].get('OPTIONS', {}).get('transaction_mode'))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True
    )


def test_embedded_defaults_need_nothing(tmp_path):
    result = load_settings(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "chat.layers.InMemoryChannelLayer",
        "120.0",
        "IMMEDIATE",
    ]
    assert (tmp_path / "secret_key").exists()


def test_database_and_redis_urls_switch_the_backends(tmp_path):
    result = load_settings(
        tmp_path,
        DATABASE_URL="postgres://u@127.0.0.1:5432/db",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert result.returncode == 0, result.stderr
    engine, layer, *_ = result.stdout.split()
    assert engine == "django.db.backends.postgresql"
    assert layer == "channels_redis.core.RedisChannelLayer"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENROUTER_READ_TIMEOUT", "soon"),
        ("OPENROUTER_READ_TIMEOUT", "-3"),
        ("DEBUG", "maybe"),
        ("OPENROUTER_BASE_URL", "ftp://example.com"),
        ("REDIS_URL", "localhost:6379"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("CHAT_HISTORY_LIMIT", "many"),
        ("DB_THREADS", "0"),
        ("DB_THREADS", "lots"),
    ],
)
def test_a_malformed_value_stops_the_start_naming_the_variable(tmp_path, name, value):
    result = load_settings(tmp_path, **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.splitlines()[-1]


def test_check_deploy_passes_with_production_settings(tmp_path):
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENROUTER_", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"))
    }
    environment.update(
        {
            "DATA_DIR": str(tmp_path),
            "SECRET_KEY": secrets.token_urlsafe(60),
            "SECURE_SSL_REDIRECT": "true",
            "SESSION_COOKIE_SECURE": "true",
            "CSRF_COOKIE_SECURE": "true",
            "SECURE_HSTS_SECONDS": "31536000",
        }
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_security_headers_and_redirect_hold_with_production_settings(client, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/health").status_code == 301
    response = client.get("/health", secure=True)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response["Content-Security-Policy"]


def test_missing_security_middleware_fails_the_deploy_check(settings):
    from config.middleware import check_security_middleware

    assert check_security_middleware(None) == []
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "XFrame" not in m]
    errors = check_security_middleware(None)
    assert [e.id for e in errors] == ["chat.E001"]
    assert "XFrameOptionsMiddleware" in errors[0].msg
