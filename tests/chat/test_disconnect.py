"""Through a real server: a client that goes away cancels the upstream request."""

import time

import httpx
import pytest

from chat.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def test_client_disconnect_cancels_the_upstream_and_stores_the_partial_answer(
    app_server, fake_openrouter, token
):
    fake_openrouter.slow_token_delay = 0.02
    body = {"model": "fake/slow", "messages": [{"role": "user", "content": "count"}]}
    headers = {"Authorization": f"Bearer {token}"}
    received = 0
    with (
        httpx.Client(base_url=app_server.url, timeout=10) as client,
        client.stream("POST", "/api/chat/stream", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:") and '"t' in line:
                received += 1
            if received >= 5:
                break
    assert fake_openrouter.wait_closed_streams(1, timeout=5), "upstream request still open"
    assert fake_openrouter.completed_streams == 0

    def stored():
        return Message.objects.get(role="assistant")

    for _ in range(100):
        if stored().status != Message.Status.STREAMING:
            break
        time.sleep(0.05)
    assistant = stored()
    assert assistant.status == Message.Status.CANCELLED
    assert assistant.content.startswith("t0 t1 t2 t3 t4")
    assert len(assistant.content.split()) < fake_openrouter.slow_tokens
