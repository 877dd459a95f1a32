"""Talking to the chat page's WebSocket consumer in tests, as the htmx ws extension does."""

import asyncio
import json

from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from chat.routing import websocket_urlpatterns

app = URLRouter(websocket_urlpatterns)


async def connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(app, "/ws/chat/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def send(communicator, **data) -> None:
    await communicator.send_to(text_data=json.dumps(data))


async def frames_until(communicator, predicate, timeout: float = 10.0) -> list[str]:
    """Collect frames until one satisfies `predicate`."""
    frames: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            frames.append(await communicator.receive_from(timeout=timeout))
            if predicate(frames[-1]):
                return frames


def turn_finished(frame: str) -> bool:
    return 'id="turn-state"' in frame and 'data-running="false"' in frame
