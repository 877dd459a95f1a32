"""Two app processes sharing one database and Redis: a turn running in one process streams to a
tab connected to the other, and Stop from that tab cancels it."""

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from tests.fake_openrouter import API_KEY

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"

SETUP = """
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from importlib import import_module
from django.conf import settings
user = get_user_model().objects.create_user("alice", password="x", is_staff=True)
store = import_module(settings.SESSION_ENGINE).SessionStore()
store["_auth_user_id"] = str(user.pk)
store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
store["_auth_user_hash"] = user.get_session_auth_hash()
store.save()
print(store.session_key)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def two_processes(tmp_path, fake_openrouter):
    fake_openrouter.slow_token_delay = 0.03
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENROUTER_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        {
            "DATA_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "OPENROUTER_BASE_URL": fake_openrouter.base_url,
            "OPENROUTER_API_KEY": API_KEY,
            "OPENROUTER_DEFAULT_MODEL": "fake/slow",
            "REDIS_URL": REDIS_URL,
            "CHANNEL_LAYER_PREFIX": f"test-{secrets.token_hex(4)}",
        }
    )
    python = sys.executable
    session = subprocess.run(
        [python, "manage.py", "shell", "-c", SETUP],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                python,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--port",
                str(port),
                "--lifespan",
                "off",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        for port in ports
    ]
    try:
        for port in ports:
            for _ in range(100):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
        yield ports, session
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


async def frames_until(ws, predicate, timeout=10.0) -> list[str]:
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frames.append(await ws.recv())
            if predicate(frames[-1]):
                return frames


async def test_a_turn_streams_across_processes_and_stops_from_the_other(
    two_processes, fake_openrouter
):
    (port_a, port_b), session = two_processes

    def open_socket(port):
        return connect(
            f"ws://127.0.0.1:{port}/ws/chat/",
            origin=Origin(f"http://127.0.0.1:{port}"),
            additional_headers={"Cookie": f"sessionid={session}"},
        )

    async with open_socket(port_a) as tab_a, open_socket(port_b) as tab_b:
        await tab_a.send(
            json.dumps({"action": "send", "message": "hi", "client_id": "x", "session_id": ""})
        )
        announce = await frames_until(tab_a, lambda f: 'id="session-id"' in f)
        session_id = announce[-1].split('id="session-id" name="session_id" value="')[1][:32]
        await tab_b.send(json.dumps({"action": "hello", "session_id": session_id}))
        # Process B's tab receives frames of the turn that process A runs.
        await frames_until(tab_b, lambda f: "t5 " in f)
        await tab_b.send(json.dumps({"action": "stop"}))
        frames = await frames_until(tab_b, lambda f: 'data-running="false"' in f)
        assert "status-cancelled" in frames[-1]
    assert await asyncio.to_thread(fake_openrouter.wait_closed_streams, 1)
