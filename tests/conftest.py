import gc
import os
from typing import Any, cast

import pytest
from django.test import AsyncClient, Client

from tests.fake_openrouter import API_KEY, FakeOpenRouter

# Live servers run Django in other threads; sync Playwright calls the ORM from the event loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session", autouse=True)
def channel_layer_prefix_per_test_process():
    """Test processes running at once (`pytest -n 2`) share one Redis: each gets key prefixes
    of its own (conversation ids, and so group names, repeat across their databases)."""
    from django.conf import settings

    layers = cast(dict[str, dict[str, Any]], settings.CHANNEL_LAYERS)
    config = layers["default"].get("CONFIG")
    if config is not None and "prefix" in config:
        config["prefix"] = f"{config['prefix']}-test-{os.getpid()}"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Real hashers cost ~0.3 s per user created or logged in; tests need no such strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def close_worker_thread_connections(django_db_setup):
    """Async ORM calls run in asgiref's one worker thread and in the pooled threads of requests
    and turns (config.threads), whose connections stay open; close them before the test
    database is dropped (PostgreSQL refuses to drop a database in use)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from config.threads import pool

    executor = SyncToAsync.single_thread_executor
    executor.submit(connections.close_all).result(timeout=10)
    pool.close()
    _end_other_sessions_of_the_test_database()
    # Connections of threads that have ended (event loops' default executors) close when
    # collected.
    gc.collect()


def _end_other_sessions_of_the_test_database() -> None:
    """Async tests run the ORM on the event loop's thread too (DJANGO_ALLOW_ASYNC_UNSAFE), and
    a test's connection there is not closed when the next test opens its own: with persistent
    connections (CONN_MAX_AGE) on PostgreSQL they stay open until the process ends. The server
    never does this (the ORM refuses to run on its event loop), so end them from the outside."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    import psycopg

    params = connection.get_connection_params()
    params["dbname"] = "postgres"
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            [connection.settings_dict["NAME"]],
        )


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    # Each test runs on an event loop of its own; a Redis channel layer keeps per-loop receive
    # state, so each test gets its own layer (a server process has one loop and one layer).
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(scope="session")
def fake_openrouter_server():
    fake = FakeOpenRouter().start()
    yield fake
    fake.stop()


@pytest.fixture
def app_server():
    """The product's ASGI application served by uvicorn (uvloop, httptools) on a free port."""
    from config.asgi import application
    from tests.servers import ThreadedServer

    server = ThreadedServer(application, loop="uvloop", http="httptools").start()
    yield server
    server.stop()


@pytest.fixture
def fake_openrouter(fake_openrouter_server, settings):
    """The fake OpenRouter, reset, with the app pointed at it."""
    fake_openrouter_server.reset()
    settings.OPENROUTER_BASE_URL = fake_openrouter_server.base_url
    settings.OPENROUTER_API_KEY = API_KEY
    settings.OPENROUTER_DEFAULT_MODEL = "fake/ok"
    settings.OPENROUTER_READ_TIMEOUT = 1.0
    return fake_openrouter_server


@pytest.fixture
def make_user(django_user_model):
    def make(username: str = "alice", *, staff: bool = True, password: str = "pw-Secret-123"):
        return django_user_model.objects.create_user(
            username=username, password=password, is_staff=staff
        )

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def other_user(make_user):
    return make_user("mallory")


@pytest.fixture
def token(user):
    from chat.services import create_api_token

    return create_api_token(user)


@pytest.fixture
def api(token):
    """A sync test client authenticated with the user's API token."""
    return Client(headers={"Authorization": f"Bearer {token}"})


class HeaderAsyncClient(AsyncClient):
    """AsyncClient that sends fixed headers on every request.

    Django 6.1's AsyncClient(headers=...) sends them as `Http-<Name>`, so add them per request.
    """

    def __init__(self, fixed_headers: dict[str, str], **kwargs):
        super().__init__(**kwargs)
        self.fixed_headers = fixed_headers

    def generic(self, method, path, *args, headers=None, **kwargs):
        return super().generic(
            method, path, *args, headers={**self.fixed_headers, **(headers or {})}, **kwargs
        )


def bearer_client(token: str) -> HeaderAsyncClient:
    return HeaderAsyncClient({"Authorization": f"Bearer {token}"})


@pytest.fixture
def aapi(token):
    """An async test client (in-process ASGI) authenticated with the user's API token."""
    return bearer_client(token)


def private_attachments_storage(settings, tmp_path):
    """Point the attachments storage at a directory of this test's own (not the project's
    data/); returns the directory."""
    location = tmp_path / "attachments"
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location)},
        },
    }
    return location
