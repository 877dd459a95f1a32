"""All settings, read from the environment (and `.env` when present).

Every value has an embedded default that needs no setup: SQLite under `data/`, the in-memory
channel layer, local files. Setting `DATABASE_URL`, `REDIS_URL` or `GCS_BUCKET_NAME` swaps in the
scale-out part. A malformed value stops the start with a message that names the variable.
"""

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _setting[T](name: str, cast: Callable[..., T], default: Any) -> T:
    """Read one variable, naming it in the error when its value cannot be used."""
    try:
        return cast(name, default=default)
    except (ValueError, TypeError, ImproperlyConfigured) as exc:
        raise ImproperlyConfigured(
            f"Environment variable {name} has an invalid value: {exc}"
        ) from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(name: str, default: bool) -> bool:
    """A strict boolean: a typo such as DEBUG=ture must not silently mean False."""
    raw = env.str(name, default=str(default)).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"Environment variable {name} must be true/false (1/0, yes/no, on/off), got {raw!r}"
    )


def _database(default: str) -> dict[str, Any]:
    url = env.str("DATABASE_URL", default=default)
    scheme = urlsplit(url).scheme
    if scheme not in environ.Env.DB_SCHEMES:
        raise ImproperlyConfigured(
            f"Environment variable DATABASE_URL has an unsupported scheme {scheme!r} "
            "(use postgres://, sqlite:///, mysql://)"
        )
    return _setting("DATABASE_URL", lambda n, default: env.db_url_config(url), None)


def _positive(name: str, value: float) -> float:
    if value <= 0:
        raise ImproperlyConfigured(f"Environment variable {name} must be positive, got {value}")
    return value


DATA_DIR = Path(_setting("DATA_DIR", env.path, BASE_DIR / "data"))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """Use SECRET_KEY when given; otherwise keep a generated one under data/ across restarts."""
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _bool("DEBUG", False)
ALLOWED_HOSTS = _setting("ALLOWED_HOSTS", env.list, ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = _setting("CSRF_TRUSTED_ORIGINS", env.list, [])

# daphne makes `runserver` serve ASGI (HTTP + WebSocket) for development. Importing it installs
# Twisted's reactor (~0.8 s per start), which `serve` (uvicorn) and the tests do not need.
_DEV_SERVER = ["daphne"] if sys.argv[1:2] == ["runserver"] else []

INSTALLED_APPS = [
    *_DEV_SERVER,
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "channels",
    "chat",
    "presets",
    "integrations",
    "attachments",
]

# Django's own middleware, with hooks that run inline under ASGI (see config/middleware.py).
MIDDLEWARE = [
    "config.middleware.SecurityMiddleware",
    "config.middleware.SessionMiddleware",
    "config.middleware.CommonMiddleware",
    "config.middleware.CsrfViewMiddleware",
    "config.middleware.AuthenticationMiddleware",
    "config.middleware.LoginRequiredMiddleware",
    "config.middleware.MessageMiddleware",
    "config.middleware.XFrameOptionsMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]
# Those checks look for Django's dotted paths; config.middleware checks for its subclasses.
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
                "chat.context_processors.product",
            ],
        },
    },
]

# Database: SQLite under data/ by default; DATABASE_URL switches (e.g. to PostgreSQL).
DATABASES = {"default": _database(f"sqlite:///{DATA_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            # `timeout` is SQLite's busy timeout. WAL is a property of the database file: it
            # is switched on once per process and file (chat.apps), not on every connection
            # (under ASGI that is every request).
            "init_command": "PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests use a file too (not :memory:), so the live servers' threads share it under WAL.
    # The process id keeps test runs that happen at the same time apart.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_chat_{os.getpid()}"}
# Requests and turns run their ORM calls in reused threads (config/threads.py), so each thread's
# connection is reused too: opening one per request was ~5% of a streamed reply's CPU. SQLite
# keeps them open; a server database recycles them after a minute and checks them before reuse.
# At most this many such threads per process (and so database connections): more requests or
# calls at once wait for one, rather than fail with PostgreSQL's "too many clients".
DB_THREADS = int(_positive("DB_THREADS", _setting("DB_THREADS", env.int, 16)))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = None
else:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: in-memory by default; REDIS_URL switches to Redis (needed for several processes).
REDIS_URL = _setting("REDIS_URL", env.str, "")
if REDIS_URL:
    if urlsplit(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"Environment variable REDIS_URL must be a redis:// URL, got {REDIS_URL!r}"
        )
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "capacity": 1000,
                "expiry": 30,
                # Keeps several deployments (or test runs) on one Redis apart.
                "prefix": _setting("CHANNEL_LAYER_PREFIX", env.str, "chat"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "chat.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = _setting("TIME_ZONE", env.str, "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# Request bodies are size-limited before anything parses them.
DATA_UPLOAD_MAX_MEMORY_SIZE = _setting("MAX_REQUEST_BODY_BYTES", env.int, 2 * 1024 * 1024)

# Security headers. A strict CSP: no inline scripts or styles, nothing from other origins.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:", "blob:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = _bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = _setting("SECURE_HSTS_SECONDS", env.int, 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if _bool("BEHIND_TLS_PROXY", False) else None
)

# OpenRouter (or any OpenAI-compatible server such as llama.cpp or Ollama).
OPENROUTER_API_KEY = _setting("OPENROUTER_API_KEY", env.str, "")
OPENROUTER_BASE_URL = _setting(
    "OPENROUTER_BASE_URL", env.str, "https://openrouter.ai/api/v1"
).rstrip("/")
if urlsplit(OPENROUTER_BASE_URL).scheme not in {"http", "https"}:
    raise ImproperlyConfigured(
        "Environment variable OPENROUTER_BASE_URL must be an http(s) URL, "
        f"got {OPENROUTER_BASE_URL!r}"
    )
OPENROUTER_DEFAULT_MODEL = _setting("OPENROUTER_DEFAULT_MODEL", env.str, "openai/gpt-4o-mini")
OPENROUTER_SYSTEM_PROMPT = _setting("OPENROUTER_SYSTEM_PROMPT", env.str, "")
OPENROUTER_APP_NAME = _setting("OPENROUTER_APP_NAME", env.str, "Chat")
OPENROUTER_APP_URL = _setting("OPENROUTER_APP_URL", env.str, "")
OPENROUTER_CONNECT_TIMEOUT = _positive(
    "OPENROUTER_CONNECT_TIMEOUT", _setting("OPENROUTER_CONNECT_TIMEOUT", env.float, 10.0)
)
# How long a stream may go without a byte before the turn fails as stalled.
OPENROUTER_READ_TIMEOUT = _positive(
    "OPENROUTER_READ_TIMEOUT", _setting("OPENROUTER_READ_TIMEOUT", env.float, 120.0)
)

# Chat turn behaviour.
CHAT_CHECKPOINT_SECONDS = _positive(
    "CHAT_CHECKPOINT_SECONDS", _setting("CHAT_CHECKPOINT_SECONDS", env.float, 2.0)
)
SSE_PING_SECONDS = _positive("SSE_PING_SECONDS", _setting("SSE_PING_SECONDS", env.float, 15.0))
CHAT_HISTORY_LIMIT = _setting("CHAT_HISTORY_LIMIT", env.int, 200)
# Pages: at most one content frame per this many seconds per turn (coalesced, never per token).
CHAT_FRAME_SECONDS = _positive(
    "CHAT_FRAME_SECONDS", _setting("CHAT_FRAME_SECONDS", env.float, 0.04)
)
# The model that names conversations after the first exchange (empty: the conversation's).
CHAT_TITLE_MODEL = _setting("CHAT_TITLE_MODEL", env.str, "")
# WebSocket frames from a page: size limit, and how often an open socket re-checks its user.
WS_MAX_FRAME_BYTES = _setting("WS_MAX_FRAME_BYTES", env.int, 256 * 1024)
WS_USER_RECHECK_SECONDS = _positive(
    "WS_USER_RECHECK_SECONDS", _setting("WS_USER_RECHECK_SECONDS", env.float, 30.0)
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": _setting("LOG_LEVEL", env.str, "INFO")},
    # The HTTP clients log every request at INFO: httpx2 (the app's and the mcp SDK's), httpx.
    "loggers": {
        name: {"level": "WARNING"} for name in ("httpx", "httpcore", "httpx2", "httpcore2")
    },
}

# MCP tools (issue 4): the tool loop, approvals, planning and the bundled housekeeping server.
MCP_CONNECT_TIMEOUT = _positive(
    "MCP_CONNECT_TIMEOUT", _setting("MCP_CONNECT_TIMEOUT", env.float, 10.0)
)
MCP_CALL_TIMEOUT = _positive("MCP_CALL_TIMEOUT", _setting("MCP_CALL_TIMEOUT", env.float, 60.0))
# A tool result longer than this is cut before it reaches the model (and the database).
MCP_RESULT_MAX_CHARS = _setting("MCP_RESULT_MAX_CHARS", env.int, 20000)
MCP_APPROVAL_TIMEOUT = _positive(
    "MCP_APPROVAL_TIMEOUT", _setting("MCP_APPROVAL_TIMEOUT", env.float, 300.0)
)
MCP_MAX_ROUNDS = _setting("MCP_MAX_ROUNDS", env.int, 20)
MCP_MAX_CONSECUTIVE_FAILURES = _setting("MCP_MAX_CONSECUTIVE_FAILURES", env.int, 2)
# Reconnect backoff for a server that dropped: doubles from the first value up to the second.
MCP_RECONNECT_MIN_SECONDS = _positive(
    "MCP_RECONNECT_MIN_SECONDS", _setting("MCP_RECONNECT_MIN_SECONDS", env.float, 1.0)
)
MCP_RECONNECT_MAX_SECONDS = _positive(
    "MCP_RECONNECT_MAX_SECONDS", _setting("MCP_RECONNECT_MAX_SECONDS", env.float, 60.0)
)
# Idle sessions are pinged this often; a failed ping reconnects.
MCP_PING_SECONDS = _positive("MCP_PING_SECONDS", _setting("MCP_PING_SECONDS", env.float, 30.0))
# Configure the bundled housekeeping server (stdio) on startup when no server has that id.
MCP_HOUSEKEEPING_DEFAULT = _setting("MCP_HOUSEKEEPING_DEFAULT", env.bool, True)
PLANNER_MODEL = _setting("PLANNER_MODEL", env.str, "openai/gpt-4o-mini")
PLANNER_TIMEOUT = _positive("PLANNER_TIMEOUT", _setting("PLANNER_TIMEOUT", env.float, 15.0))
# Key for secrets stored encrypted in the database; derived from SECRET_KEY when empty.
FIELD_ENCRYPTION_KEY = _setting("FIELD_ENCRYPTION_KEY", env.str, "")

# Attachments (issue 6) -----------------------------------------------------------------------
# Uploads bigger than this are refused (413) while they are received, never stored.
ATTACHMENTS_MAX_SIZE_BYTES = int(
    _positive(
        "ATTACHMENTS_MAX_SIZE_BYTES",
        _setting("ATTACHMENTS_MAX_SIZE_BYTES", env.int, 10 * 1024 * 1024),
    )
)
# Files are removed this many days after they were last sent to the model (or uploaded).
ATTACHMENTS_RETENTION_DAYS = _positive(
    "ATTACHMENTS_RETENTION_DAYS", _setting("ATTACHMENTS_RETENTION_DAYS", env.float, 7.0)
)
# Lifetime of signed download URLs (local) and V4 signed URLs (GCS).
ATTACHMENTS_URL_EXPIRY_SECONDS = int(
    _positive(
        "ATTACHMENTS_URL_EXPIRY_SECONDS",
        _setting("ATTACHMENTS_URL_EXPIRY_SECONDS", env.int, 3600),
    )
)
# How often `manage.py serve` runs the cleanup in the background; 0 turns that off.
ATTACHMENTS_CLEANUP_INTERVAL_SECONDS = _setting(
    "ATTACHMENTS_CLEANUP_INTERVAL_SECONDS", env.int, 3600
)
# A private bucket replaces the local directory when set; credentials come from
# GOOGLE_APPLICATION_CREDENTIALS (a service-account key file, also used to sign URLs).
GCS_BUCKET_NAME = _setting("GCS_BUCKET_NAME", env.str, "")
GCS_PROJECT_ID = _setting("GCS_PROJECT_ID", env.str, "") or None
GOOGLE_APPLICATION_CREDENTIALS = _setting("GOOGLE_APPLICATION_CREDENTIALS", env.str, "")
ATTACHMENTS_LOCAL_DIR = DATA_DIR / "attachments"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "attachments": (
        {
            "BACKEND": "attachments.storage.PrivateGCSStorage",
            "OPTIONS": {"bucket_name": GCS_BUCKET_NAME, "project_id": GCS_PROJECT_ID},
        }
        if GCS_BUCKET_NAME
        else {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(ATTACHMENTS_LOCAL_DIR), "base_url": None},
        }
    ),
}
# The size limit is checked chunk by chunk as the multipart body is parsed.
FILE_UPLOAD_HANDLERS = [
    "attachments.uploads.SizeLimitUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# Models, settings and presets (issue 5) ------------------------------------------------------
# How long the OpenRouter model catalogue is cached per process; 0 fetches on every request
# (concurrent requests still share one fetch).
MODELS_CACHE_SECONDS = _setting("MODELS_CACHE_SECONDS", env.float, 60.0)
if MODELS_CACHE_SECONDS < 0:
    raise ImproperlyConfigured(
        f"Environment variable MODELS_CACHE_SECONDS must be 0 or more, got {MODELS_CACHE_SECONDS}"
    )
