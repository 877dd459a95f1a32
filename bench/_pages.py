"""Helpers for the page benchmarks (ws_frames.py, page_load.py).

- A fake OpenRouter whose reply tokens carry the time they were sent (`StampedFake`), served in
  a process of its own: `python -m bench._pages PORT TOKENS TOKEN_DELAY_SECONDS`.
- Starting the app as the product runs it (`manage.py serve`) with a throwaway DATA_DIR, a staff
  user and a logged-in session cookie for it.

Stamps: every content token is `zq` + 5 base-36 digits of CLOCK_MONOTONIC in 10 us units, taken
when the fake builds the chunk, right before writing it. CLOCK_MONOTONIC is one clock for every
process of the machine (Linux), so a client in another process can subtract the stamp from the
time a frame arrived. 36**5 units = 604 s, so the difference taken modulo that is unambiguous for
any latency under ten minutes. A token is 8 characters with its space, close to a real word.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, prepare_app_database, serve_fake_upstream, wait_until_up
from tests.fake_openrouter import API_KEY, FakeOpenRouter

PLACEHOLDER = "@stamp@"
_UNIT_NS = 10_000  # 10 microseconds
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_WRAP = 36**5
STAMP_RE = re.compile(r"\bzq([0-9a-z]{5})\b")


def now_units() -> int:
    return time.monotonic_ns() // _UNIT_NS


def stamp(units: int | None = None) -> str:
    value = (now_units() if units is None else units) % _WRAP
    digits = []
    for _ in range(5):
        value, rest = divmod(value, 36)
        digits.append(_DIGITS[rest])
    return "zq" + "".join(reversed(digits))


def age_seconds(stamp_digits: str, arrived_units: int) -> float:
    """Seconds from a stamp (its 5 digits) to `arrived_units` (from now_units())."""
    sent = int(stamp_digits, 36)
    return ((arrived_units - sent) % _WRAP) * _UNIT_NS / 1e9


class StampedFake(FakeOpenRouter):
    """The tests' fake, with each placeholder token replaced by its send time."""

    def _chunk(self, generation_id: str, model: str, **delta_or_extra: Any) -> bytes:
        content = delta_or_extra.get("content")
        if content and PLACEHOLDER in content:
            delta_or_extra["content"] = content.replace(PLACEHOLDER, stamp())
        return super()._chunk(generation_id, model, **delta_or_extra)


def _serve_fake() -> None:
    port, tokens, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    fake = StampedFake()
    fake.token_delay = delay
    fake.reply_tokens = [f"{PLACEHOLDER} " for _ in range(tokens)]
    serve_fake_upstream(fake, port)


def start_fake(tmp: Path, port: int, tokens: int, delay: float) -> subprocess.Popen:
    log = (tmp / "fake.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "bench._pages", str(port), str(tokens), str(delay)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def app_env(tmp: Path, fake_url: str, model: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATA_DIR": str(tmp),
        # Explicit values win over a developer's .env (read without overwriting the environment).
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "REDIS_URL": "",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "OPENROUTER_BASE_URL": f"{fake_url}/api/v1",
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_DEFAULT_MODEL": model,
        # No MCP tools: a plain chat turn (a tools turn is another path, with planner calls).
        "MCP_HOUSEKEEPING_DEFAULT": "false",
    }


_SETUP = """
from django.conf import settings
from django.contrib.auth import get_user_model
from importlib import import_module
user = get_user_model().objects.create_user("bench", password="x", is_staff=True)
store = import_module(settings.SESSION_ENGINE).SessionStore()
store["_auth_user_id"] = str(user.pk)
store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
store["_auth_user_hash"] = user.get_session_auth_hash()
store.save()
print(store.session_key)
"""


def start_app(tmp: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Migrate, make a staff user with a session, then `manage.py serve` (one worker).

    Returns the process and the session key (the `sessionid` cookie)."""
    manage = [sys.executable, "manage.py"]
    session = prepare_app_database(env, _SETUP)
    log = (tmp / "app.log").open("w")
    app = subprocess.Popen(
        [*manage, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_until_up(app, f"http://127.0.0.1:{port}/health")
    return app, session


if __name__ == "__main__":
    _serve_fake()
