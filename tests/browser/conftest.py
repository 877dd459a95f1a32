"""Browser tests: Playwright driving Debian's Chromium against the app served by uvicorn.

They run in their own pytest invocation (`pytest -m browser tests/browser`): sync Playwright
leaves an event loop behind that breaks later pytest-asyncio tests in the same process.
"""

import os
import tempfile
from importlib import import_module
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from tests.servers import ThreadedServer

# The README's screenshots are refreshed on request (UPDATE_SCREENSHOTS=1); otherwise the tests
# still take them, into a scratch folder, so a test run leaves the working tree clean.
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "chat-screenshots"
)
SCREENSHOTS.mkdir(parents=True, exist_ok=True)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(items):
    # This hook sees every collected test, not just this folder's.
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser_type_launch_args():
    return {"executable_path": "/usr/bin/chromium", "args": CHROMIUM_ARGS}


@pytest.fixture
def app_server(transactional_db, fake_openrouter):
    from config.asgi import application

    server = ThreadedServer(application, loop="uvloop", http="httptools", ws="websockets").start()
    yield server
    server.stop()


@pytest.fixture
def logged_in(app_server, user, context):
    """Log the browser context in as `user` with a real session cookie."""
    engine = import_module(django_settings.SESSION_ENGINE)
    session = engine.SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.save()
    context.add_cookies(
        [
            {
                "name": django_settings.SESSION_COOKIE_NAME,
                "value": session.session_key,
                "url": app_server.url,
            }
        ]
    )
    return app_server
