"""A fake OpenRouter: a real HTTP server speaking OpenRouter's wire format, with scripted faults.

The scenario is picked by the requested model, `fake/<scenario>`; any other model answers
normally. Scenarios: `ok` (default), `reasoning`, `slow`, `401`, `429`, `500`, `drop`,
`malformed`, `inband-error`, `stall`, `utf8-split`, `tools` (asks for the tool in
`FakeOpenRouter.tool_call` on the first round, answers normally once a tool result is sent),
`tool-turn` (asks for the calls in `FakeOpenRouter.round_calls` (default: `tool_call`) whenever
the last message is not a tool result), `tools-always` (asks for them every round),
`reject-tools` (a 400 about tools when the request offers tools; answers normally otherwise),
`planner` (non-stream: answers `FakeOpenRouter.planner_reply` after `planner_delay` seconds).

Every request is recorded (`requests`), and so is every stream the client closed early
(`closed_streams`), so tests can check what reached the upstream and that it was cancelled.
"""

import asyncio
import itertools
import json
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.servers import ThreadedServer

API_KEY = "sk-or-test-key"


class FakeOpenRouter:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.closed_streams = 0
        self.completed_streams = 0
        self.models_fetches = 0
        # Seconds `GET /models` takes, so tests can have many requests wait on one fetch.
        self.models_delay = 0.0
        self.generations: dict[str, dict[str, Any]] = {}
        self.token_delay = 0.0
        self.slow_token_delay = 0.05
        self.slow_tokens = 200
        self.stall_seconds = 30.0
        self.reply_tokens: list[str] | None = None
        self.models: list[dict[str, Any]] = [
            {"id": "fake/ok", "name": "Fake OK", "context_length": 8192}
        ]
        self.tool_call = {"name": "get_time", "arguments": "{}"}
        # Calls asked for in one round by `tool-turn` / `tools-always` (None: [tool_call]).
        self.round_calls: list[dict[str, str]] | None = None
        self.planner_reply = '{"tools": []}'
        self.planner_delay = 0.0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stream_closed = threading.Condition(self._lock)
        self.server: ThreadedServer | None = None

    # Test helpers --------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.closed_streams = 0
            self.completed_streams = 0
            self.models_fetches = 0
            self.models_delay = 0.0
            self.token_delay = 0.0
            self.reply_tokens = None
            self.slow_token_delay = 0.05
            self.slow_tokens = 200
            self.stall_seconds = 30.0
            self.tool_call = {"name": "get_time", "arguments": "{}"}
            self.round_calls = None
            self.planner_reply = '{"tools": []}'
            self.planner_delay = 0.0

    def wait_closed_streams(self, count: int, timeout: float = 5.0) -> bool:
        with self._stream_closed:
            return self._stream_closed.wait_for(lambda: self.closed_streams >= count, timeout)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"{self.server.url}/api/v1"

    def start(self) -> "FakeOpenRouter":
        self.server = ThreadedServer(self.app()).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    # The server -----------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/api/v1/models", self.list_models, methods=["GET"]),
                Route("/api/v1/generation", self.generation, methods=["GET"]),
            ]
        )

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {API_KEY}"

    async def list_models(self, request: Request) -> Response:
        with self._lock:
            self.models_fetches += 1
        if self.models_delay:
            await asyncio.sleep(self.models_delay)
        return JSONResponse({"data": self.models})

    async def generation(self, request: Request) -> Response:
        data = self.generations.get(request.query_params.get("id", ""))
        if data is None:
            return JSONResponse({"error": {"message": "Generation not found", "code": 404}}, 404)
        return JSONResponse({"data": data})

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append({"headers": dict(request.headers), "body": body})
        if not self._authorized(request):
            return JSONResponse(
                {"error": {"message": "No auth credentials found", "code": 401}}, 401
            )
        model = str(body.get("model", ""))
        scenario = model.split("/", 1)[1] if model.startswith("fake/") else "ok"
        if scenario == "401":
            return JSONResponse({"error": {"message": "User not found.", "code": 401}}, 401)
        if scenario == "429":
            return JSONResponse(
                {"error": {"message": "Rate limit exceeded", "code": 429}},
                429,
                headers={"Retry-After": "7"},
            )
        if scenario == "500":
            return JSONResponse({"error": {"message": "Internal Server Error", "code": 500}}, 500)
        if scenario == "reject-tools" and body.get("tools"):
            return JSONResponse(
                {"error": {"message": "No endpoints found that support tool use.", "code": 400}},
                400,
            )
        generation_id = f"gen-{next(self._ids)}"
        if not body.get("stream") and scenario == "planner":
            await asyncio.sleep(self.planner_delay)
            return JSONResponse(
                {
                    "id": generation_id,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": self.planner_reply},
                        }
                    ],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "cost": 0.00002},
                }
            )
        if not body.get("stream"):
            text = "".join(self._tokens(body))
            return JSONResponse(
                {
                    "id": generation_id,
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                }
            )
        return StreamingResponse(
            self._stream(scenario, model, body, generation_id),
            media_type="text/event-stream",
        )

    def _tokens(self, body: dict[str, Any]) -> list[str]:
        if self.reply_tokens is not None:
            return list(self.reply_tokens)
        last_user = ""
        for message in body.get("messages", []):
            if message.get("role") == "user":
                content = message.get("content")
                last_user = content if isinstance(content, str) else json.dumps(content)
        return ["Echo", ": ", *[w + " " for w in last_user.split()][:50], "done."]

    def _chunk(self, generation_id: str, model: str, **delta_or_extra: Any) -> bytes:
        finish = delta_or_extra.pop("finish_reason", None)
        usage = delta_or_extra.pop("usage", None)
        chunk: dict[str, Any] = {
            "id": generation_id,
            "provider": "FakeProvider",
            "model": model,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "choices": [{"index": 0, "delta": delta_or_extra, "finish_reason": finish}],
        }
        if usage is not None:
            chunk["choices"] = []
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

    async def _stream(self, scenario: str, model: str, body: dict[str, Any], generation_id: str):
        chunk = lambda **kw: self._chunk(generation_id, model, **kw)  # noqa: E731
        tokens = self._tokens(body)
        delay = self.token_delay
        if scenario == "slow":
            tokens = [f"t{i} " for i in range(self.slow_tokens)]
            delay = self.slow_token_delay
        finished = False
        try:
            yield b": OPENROUTER PROCESSING\n\n"
            yield chunk(role="assistant", content="")
            if scenario == "reasoning":
                for part in ("Let me ", "think."):
                    yield chunk(reasoning=part)
            if scenario == "tools" and not any(m.get("role") == "tool" for m in body["messages"]):
                yield chunk(
                    tool_calls=[
                        {
                            "index": 0,
                            "id": f"call_{generation_id}",
                            "type": "function",
                            "function": {"name": self.tool_call["name"], "arguments": ""},
                        }
                    ]
                )
                yield chunk(
                    tool_calls=[
                        {"index": 0, "function": {"arguments": self.tool_call["arguments"]}}
                    ]
                )
                yield chunk(finish_reason="tool_calls")
                yield b"data: [DONE]\n\n"
                finished = True
                return
            last_role = (body["messages"] or [{}])[-1].get("role")
            if scenario == "tools-always" or (scenario == "tool-turn" and last_role != "tool"):
                calls = self.round_calls if self.round_calls is not None else [self.tool_call]
                for index, call in enumerate(calls):
                    call_id = f"call_{generation_id}_{index}"
                    head = {"name": call["name"], "arguments": ""}
                    yield chunk(
                        tool_calls=[
                            {"index": index, "id": call_id, "type": "function", "function": head}
                        ]
                    )
                    arguments = call.get("arguments", "{}")
                    yield chunk(tool_calls=[{"index": index, "function": {"arguments": arguments}}])
                yield chunk(finish_reason="tool_calls")
                yield b"data: [DONE]\n\n"
                finished = True
                return
            if scenario == "utf8-split":
                # One multi-byte character split across two writes (and TCP segments).
                data = chunk(content="caf\u00e9 \u2615 ok")
                cut = data.index("\u00e9".encode()) + 1
                yield data[:cut]
                await asyncio.sleep(0.05)
                yield data[cut:]
                tokens = []
            for index, token in enumerate(tokens):
                if delay:
                    await asyncio.sleep(delay)
                yield chunk(content=token)
                if index == 1 and scenario in {"drop", "malformed", "inband-error", "stall"}:
                    if scenario == "drop":
                        raise ConnectionAbortedError("fake: drop mid-stream")
                    if scenario == "malformed":
                        yield b'data: {"id": "broken", "choices": [\n\n'
                    if scenario == "inband-error":
                        error = {"error": {"message": "Provider returned error", "code": 502}}
                        yield f"data: {json.dumps(error)}\n\n".encode()
                    if scenario == "stall":
                        await asyncio.sleep(self.stall_seconds)
                    return
                if index % 8 == 7:
                    yield b": OPENROUTER PROCESSING\n\n"
            yield chunk(content="", finish_reason="stop")
            prompt_tokens = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(tokens),
                "total_tokens": prompt_tokens + len(tokens),
                "cost": 0.00012,
            }
            yield chunk(usage=usage)
            yield b"data: [DONE]\n\n"
            finished = True
            self.generations[generation_id] = {
                "id": generation_id,
                "model": model,
                "provider_name": "FakeProvider",
                "total_cost": 0.00012,
                "tokens_prompt": prompt_tokens,
                "tokens_completion": len(tokens),
                "latency": 120,
            }
        finally:
            with self._stream_closed:
                if finished:
                    self.completed_streams += 1
                else:
                    self.closed_streams += 1
                self._stream_closed.notify_all()
