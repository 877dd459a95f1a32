"""Parse a server-sent event stream the way a client would."""

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class SSEvent:
    name: str
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(raw: bytes) -> tuple[list[SSEvent], list[str]]:
    """Return (events, comment lines)."""
    events, comments = [], []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append(SSEvent(name, "\n".join(data)))
    return events, comments


def content_of(events: list[SSEvent]) -> str:
    text = []
    for event in events:
        if event.name == "message" and event.data != "[DONE]":
            for choice in event.json.get("choices", []):
                text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


async def read_stream(response) -> tuple[list[SSEvent], list[str]]:
    raw = b"".join([chunk async for chunk in response.streaming_content])
    return parse_sse(raw)
