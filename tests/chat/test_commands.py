import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.core.management import CommandError, call_command

from chat.models import ApiToken, Conversation, Message
from chat.services import authenticate_token, recover_interrupted_messages

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_create_api_token_prints_a_working_token_once(user, capsys):
    call_command("create_api_token", "alice", "--name", "laptop")
    raw = capsys.readouterr().out.strip()
    token = ApiToken.objects.get()
    assert token.name == "laptop"
    assert authenticate_token(raw) == user
    assert raw not in token.key_hash


@pytest.mark.django_db
def test_create_api_token_for_unknown_user_fails_clearly():
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_token", "ghost")


@pytest.mark.django_db
def test_streaming_messages_left_by_a_crash_become_interrupted_with_their_text(user):
    conversation = Conversation.objects.create(user=user)
    stuck = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content="half an **ans"
    )
    done = Message.objects.create(conversation=conversation, role="assistant", content="ok")
    assert recover_interrupted_messages() == 1
    stuck.refresh_from_db()
    assert stuck.status == Message.Status.INTERRUPTED
    assert stuck.content == "half an **ans"
    assert stuck.html.startswith("<p>half an")
    assert "stopped" in stuck.error
    done.refresh_from_db()
    assert done.status == Message.Status.COMPLETE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_migrates_creates_an_admin_and_serves(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENROUTER_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update({"DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"})
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        health = None
        for _ in range(150):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health is not None and health.json()["status"] == "ok"
        login = httpx.get(f"http://127.0.0.1:{port}/login/")
        assert login.status_code == 200
        csp = login.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        static = httpx.get(f"http://127.0.0.1:{port}/static/css/app.css")
        assert static.status_code == 200
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert "Created the staff superuser 'admin' with password: " in output
    assert "OPENROUTER_API_KEY is not set" in output
    assert (tmp_path / "db.sqlite3").exists()


@pytest.mark.django_db
def test_a_new_sqlite_database_is_put_in_wal_mode_once_per_process(tmp_path, settings):
    from django.db.backends.sqlite3.base import DatabaseWrapper

    from chat import apps

    def open_connection(name: str) -> DatabaseWrapper:
        options = dict(settings.DATABASES["default"].get("OPTIONS", {}))
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
            options = {"timeout": 20, "init_command": "PRAGMA synchronous=NORMAL;"}
        wrapper = DatabaseWrapper(
            {**settings.DATABASES["default"], "NAME": name, "OPTIONS": options}
        )
        wrapper.ensure_connection()
        return wrapper

    path = str(tmp_path / "fresh.sqlite3")
    first = open_connection(path)
    try:
        with first.cursor() as cursor:
            assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        first.close()
    assert path in apps._wal_files
    # Later connections to the same file ask nothing: the mode is stored in the file.
    second = open_connection(path)
    try:
        with second.cursor() as cursor:
            assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        second.close()
