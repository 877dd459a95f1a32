"""What the chat page's WebSocket adds to a streamed reply: token-to-frame latency and CPU.

Starts the fake OpenRouter (tests/fake_openrouter.py, with time-stamped tokens: bench/_pages.py)
and the app as the product runs it (`manage.py serve`: uvicorn + uvloop + httptools, one
worker), each in a process of its own, with a throwaway DATA_DIR. Simulated pages (websockets
clients with the session cookie and the page's Origin) each send a message and read the HTML
frames until the turn ends. For every token, the time from the fake sending it to the first
frame that shows it; the same measured straight from the fake in the same run is the baseline.
Prints p50/p99 added at 1 and 50 concurrent pages, the app's CPU per 1,000 tokens, and whether
the targets are met. See bench/README.md.

Run: uv run python bench/ws_frames.py   (about 1 minute)
"""

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    cpu_seconds,
    free_port,
    machine_notes,
    percentile,
    stop,
    wait_until_up,
)
from bench._pages import STAMP_RE, age_seconds, app_env, now_units, start_app, start_fake
from tests.fake_openrouter import API_KEY

TOKENS = 64
TOKEN_DELAY = 0.02  # 50 tokens/s
TURN_SECONDS = TOKENS * TOKEN_DELAY
MODEL = "fake/ok"
TURN_TIMEOUT = 30.0

# Targets (issue 3, item 8), one worker.
TARGET_P99_MS_AT_50 = 60.0
TARGET_CPU_MS_PER_1K = 250.0

_SESSION_ID_RE = re.compile(r'id="session-id" name="session_id" value="([0-9a-f]+)"')
_TURN_OVER = 'data-running="false"'


class BenchError(Exception):
    pass


@dataclass
class TurnResult:
    latencies: list[float]  # per token: seconds from the upstream sending it to seeing it
    frames: int = 0
    frame_bytes: int = 0
    warm_up: bool = False


@dataclass
class Side:
    """One way to get the tokens: through the page WebSocket, or from the fake directly."""

    name: str
    results: dict[int, list[TurnResult]] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)  # concurrency -> app CPU seconds
    # concurrency -> the fake upstream's CPU seconds while it served these blocks (for scale)
    fake_cpu: dict[int, float] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)  # concurrency -> tokens in those blocks


class Page:
    """One open chat page: its socket and the conversation it shows."""

    def __init__(self, url: str, session: str, index: int) -> None:
        self.url = url
        self.session = session
        self.index = index
        self.session_id = ""
        self.turns = 0
        self.ws: ClientConnection | None = None

    async def open(self) -> None:
        host = self.url.removeprefix("http://")
        # Compression on (permessage-deflate), as browsers negotiate it.
        self.ws = await connect(
            f"ws://{host}/ws/chat/",
            origin=self.url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"sessionid={self.session}"},
            max_size=None,
            open_timeout=10,
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def turn(self) -> TurnResult:
        """Send a message as the composer does; read frames until the turn has ended."""
        assert self.ws is not None
        self.turns += 1
        await self.ws.send(
            json.dumps(
                {
                    "action": "send",
                    "message": f"Tell me something in {TOKENS} words ({self.turns}).",
                    "client_id": f"bench-{self.index}-{self.turns}-{time.monotonic_ns()}",
                    "session_id": self.session_id,
                }
            )
        )
        seen: set[str] = set()
        result = TurnResult(latencies=[])
        last = ""
        async with asyncio.timeout(TURN_TIMEOUT):
            while True:
                frame = await self.ws.recv()
                arrived = now_units()
                assert isinstance(frame, str)
                result.frames += 1
                result.frame_bytes += len(frame)
                for digits in STAMP_RE.findall(frame):
                    if digits not in seen:
                        seen.add(digits)
                        result.latencies.append(age_seconds(digits, arrived))
                if not self.session_id and (found := _SESSION_ID_RE.search(frame)):
                    self.session_id = found.group(1)
                if _TURN_OVER in frame:
                    last = frame
                    break
        if "status-complete" not in last or len(seen) != TOKENS:
            raise BenchError(
                f"page {self.index}: turn ended with {len(seen)}/{TOKENS} tokens: {last[:300]!r}"
            )
        return result


async def direct_turn(client: httpx.AsyncClient, fake_url: str) -> TurnResult:
    """The baseline: the same reply straight from the fake, each token timed as it arrives."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Tell me something in {TOKENS} words."}],
        "stream": True,
        "usage": {"include": True},
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    result = TurnResult(latencies=[])
    seen: set[str] = set()
    async with asyncio.timeout(TURN_TIMEOUT):
        async with client.stream(
            "POST", f"{fake_url}/api/v1/chat/completions", json=body, headers=headers
        ) as response:
            if response.status_code != 200:
                raise BenchError(f"fake answered HTTP {response.status_code}")
            async for line in response.aiter_lines():
                arrived = now_units()
                for digits in STAMP_RE.findall(line):
                    if digits not in seen:
                        seen.add(digits)
                        result.latencies.append(age_seconds(digits, arrived))
    if len(seen) != TOKENS:
        raise BenchError(f"baseline stream ended with {len(seen)}/{TOKENS} tokens")
    return result


async def run_block(
    side: Side,
    concurrency: int,
    rounds: int,
    one_turn: Callable[[int], Awaitable[TurnResult]],
    app_pid: int | None,
    fake_pid: int | None = None,
) -> None:
    """`concurrency` workers each run `rounds` turns back to back.

    Workers start staggered over one turn's duration, so about `concurrency` turns are in flight
    throughout; at concurrency > 1 each worker's first turn (ramp-up, fewer in flight) is left
    out of the latency figures (its tokens and CPU still count)."""
    stagger = TURN_SECONDS / concurrency

    async def worker(index: int) -> list[TurnResult]:
        await asyncio.sleep(index * stagger)
        out = []
        for round_ in range(rounds):
            result = await one_turn(index)
            result.warm_up = concurrency > 1 and round_ == 0
            out.append(result)
        return out

    cpu_before = cpu_seconds(app_pid) if app_pid else 0.0
    fake_before = cpu_seconds(fake_pid) if fake_pid else 0.0
    batches = await asyncio.gather(*(worker(i) for i in range(concurrency)))
    if app_pid:
        side.cpu[concurrency] = side.cpu.get(concurrency, 0.0) + cpu_seconds(app_pid) - cpu_before
    if fake_pid:
        fake_used = cpu_seconds(fake_pid) - fake_before
        side.fake_cpu[concurrency] = side.fake_cpu.get(concurrency, 0.0) + fake_used
    results = [r for batch in batches for r in batch]
    side.tokens[concurrency] = side.tokens.get(concurrency, 0) + sum(
        len(r.latencies) for r in results
    )
    side.results.setdefault(concurrency, []).extend(results)


@dataclass
class Outcome:
    app: Side
    base: Side
    idle_cpu_ms_per_s: dict[int, float]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Profiler:
    """py-spy recording the app during one phase (both of its app blocks)."""

    def __init__(self, output: str | None) -> None:
        self.output = output
        self.proc: subprocess.Popen | None = None

    def start(self, pid: int) -> None:
        if self.output and self.proc is None:
            self.proc = subprocess.Popen(
                # --gil: only the thread holding the GIL, i.e. running Python (here py-spy
                # counts threads blocked in a wait as active).
                ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--threads", "--gil",
                 "--rate", "200", "--output", self.output],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)  # py-spy attaches before the blocks start

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            self.proc.wait(timeout=30)


async def measure(
    args: argparse.Namespace,
    app_pid: int,
    app_url: str,
    fake_url: str,
    session: str,
    profiler: Profiler,
    fake_pid: int | None = None,
) -> Outcome:
    app, base = Side("app"), Side("baseline")
    idle: dict[int, float] = {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as client:
        for concurrency, rounds in ((1, args.turns_c1 // 2), (args.pages, args.rounds_c50)):
            pages = [Page(app_url, session, i) for i in range(concurrency)]
            try:
                _say(f"opening {concurrency} page(s), each with a first turn (not measured) ...")
                await asyncio.gather(*(p.open() for p in pages))
                await asyncio.gather(*(p.turn() for p in pages))
                await asyncio.sleep(1.0)  # titles of the new conversations are made after a turn
                before = cpu_seconds(app_pid)
                await asyncio.sleep(args.idle_seconds)
                idle[concurrency] = (cpu_seconds(app_pid) - before) / args.idle_seconds * 1000

                async def page_turn(index: int, pages: list[Page] = pages) -> TurnResult:
                    return await pages[index].turn()

                async def direct(index: int) -> TurnResult:
                    return await direct_turn(client, fake_url)

                # A B B A, so a drift over the run hits both sides alike.
                if args.profile and concurrency == args.profile_at:
                    profiler.start(app_pid)
                for side, one_turn in ((app, page_turn), (base, direct), (base, direct),
                                       (app, page_turn)):  # fmt: skip
                    _say(f"{side.name:8} x{concurrency} ...")
                    pid = app_pid if side is app else None
                    upstream = fake_pid if side is app else None
                    await run_block(side, concurrency, rounds, one_turn, pid, upstream)
                profiler.stop()
            finally:
                await asyncio.gather(*(p.close() for p in pages), return_exceptions=True)
    return Outcome(app, base, idle)


def _ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def _disturbance(base: Side, load: tuple[float, float]) -> list[str]:
    """Why the latency figures of this run mean little, if they do.

    Straight from the fake a token arrives well under a millisecond after it was sent; a
    baseline p99 of a token's interval (20 ms) or more, or other load when the run started,
    means the CPUs that the client, the app and the fake share were busy. Subtracting such a
    baseline could even make the app look faster than the upstream."""
    reasons = []
    for concurrency, runs in sorted(base.results.items()):
        p99 = percentile([x for r in runs if not r.warm_up for x in r.latencies], 99)
        if p99 >= TOKEN_DELAY:
            reasons.append(
                f"the baseline at {concurrency} page(s) was slow (p99 {p99 * 1000:.0f} ms)"
            )
    cpus = os.cpu_count() or 1
    if load[0] > cpus / 2:
        reasons.append(f"the load average was {load[0]:.2f} on {cpus} CPUs before the run")
    return reasons


def report(outcome: Outcome, load: tuple[float, float]) -> bool:
    app, base = outcome.app, outcome.base
    disturbed = _disturbance(base, load)
    met = True
    lines = [
        f"Page frames: {TOKENS} tokens at {1 / TOKEN_DELAY:g} tokens/s a turn, one worker",
        f"{'':38} {'baseline':>9} {'app':>9} {'added':>9}   target",
    ]
    top = max(app.results)
    for concurrency in sorted(app.results):
        a_runs = [r for r in app.results[concurrency] if not r.warm_up]
        b_runs = [r for r in base.results[concurrency] if not r.warm_up]
        a_lat = [x for r in a_runs for x in r.latencies]
        b_lat = [x for r in b_runs for x in r.latencies]
        lines.append(
            f"-- {concurrency} concurrent page(s) ({len(a_runs)}/{len(b_runs)} turns, "
            f"{len(a_lat)}/{len(b_lat)} tokens)"
        )
        for q in (50, 99):
            a, b = _ms(a_lat, q), _ms(b_lat, q)
            verdict = ""
            if q == 99 and concurrency == top:
                verdict = f"<= {TARGET_P99_MS_AT_50:g}  "
                if disturbed:
                    verdict += "NOT JUDGED (busy machine)"
                    met = False
                else:
                    ok = a - b <= TARGET_P99_MS_AT_50
                    met = met and ok
                    verdict += "MET" if ok else "MISSED"
            lines.append(
                f"  token -> frame p{q} (ms){'':18} {b:9.2f} {a:9.2f} {a - b:9.2f}   {verdict}"
            )
        lines.append(
            f"  token -> frame max (ms){'':18} {_ms(b_lat, 100):9.2f} {_ms(a_lat, 100):9.2f}"
        )
        frames = sum(r.frames for r in a_runs) / len(a_runs)
        size = sum(r.frame_bytes for r in a_runs) / max(1, sum(r.frames for r in a_runs))
        lines.append(f"  frames per turn (avg) {frames:.1f}, {size:.0f} characters a frame (avg)")
    lines.append("")
    lines.append(
        "Server CPU per 1,000 tokens (ms)      app    fake upstream serving the app (for scale)"
    )
    for concurrency in sorted(app.cpu):
        per_1k = app.cpu[concurrency] / app.tokens[concurrency] * 1e6
        fake_1k = app.fake_cpu.get(concurrency, float("nan")) / app.tokens[concurrency] * 1e6
        verdict = ""
        if concurrency == top:
            # The targets are "at 50 streams"; the 1-page figure is printed, not judged
            # (on these machines it is mostly the cost of waking an idle process per event:
            # the fake's own column shows the same effect).
            ok = per_1k <= TARGET_CPU_MS_PER_1K
            met = met and ok
            verdict = f"<= {TARGET_CPU_MS_PER_1K:g}  {'MET' if ok else 'MISSED'}"
        lines.append(
            f"  at {concurrency:2} concurrent page(s) {per_1k:9.1f} {fake_1k:9.1f}   {verdict}"
        )
        lines.append(
            f"{'':6}(idle with the pages open: {outcome.idle_cpu_ms_per_s[concurrency]:.1f} ms/s)"
        )
    lines.append("")
    if disturbed:
        lines.append(
            f"WARNING: {'; '.join(disturbed)}. The machine was busy: the latency target is not "
            "judged; rerun on an idle machine."
        )
    else:
        lines.append("All targets met." if met else "Some targets were MISSED.")
    lines.extend(machine_notes(load))
    print()
    print("\n".join(lines))
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--turns-c1", type=int, default=12, help="measured turns at 1 page (default 12)"
    )
    parser.add_argument("--pages", type=int, default=50, help="concurrent pages (default 50)")
    parser.add_argument(
        "--rounds-c50",
        type=int,
        default=3,
        help="turns per page per block at --pages, the first one a warm-up (default 3)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=2.0,
        help="how long to measure the app's CPU with the pages open and idle (default 2)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the app with py-spy (if installed) into FILE as collapsed stacks while "
        "measuring the app blocks at --profile-at pages; profiling slows the app, so the "
        "numbers of such a run are not the result",
    )
    parser.add_argument(
        "--profile-at",
        type=int,
        default=None,
        help="the concurrency whose app blocks are profiled (default: --pages)",
    )
    args = parser.parse_args()
    args.turns_c1 = max(args.turns_c1, 2)
    args.rounds_c50 = max(args.rounds_c50, 2)
    args.pages = max(args.pages, 2)
    args.idle_seconds = max(args.idle_seconds, 0.5)
    if args.profile_at is None:
        args.profile_at = args.pages
    fake = app = None
    profiler = Profiler(args.profile)
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            fake_port, app_port = free_port(), free_port()
            fake_url = f"http://127.0.0.1:{fake_port}"
            app_url = f"http://127.0.0.1:{app_port}"
            fake = start_fake(tmp, fake_port, TOKENS, TOKEN_DELAY)
            app, session = start_app(tmp, app_port, app_env(tmp, fake_url, MODEL))
            wait_until_up(fake, f"{fake_url}/api/v1/models")

            async def bounded() -> Outcome:
                async with asyncio.timeout(180):
                    return await measure(
                        args, app.pid, app_url, fake_url, session, profiler, fake.pid
                    )

            runner: Any
            try:
                import uvloop

                runner = uvloop.run
            except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
                runner = asyncio.run
            load_start = os.getloadavg()[0]
            outcome = runner(bounded())
            load = (load_start, os.getloadavg()[0])
        except (
            BenchError,
            RuntimeError,
            OSError,
            WebSocketException,
            subprocess.CalledProcessError,
        ) as exc:
            print(f"benchmark failed: {exc!r}", file=sys.stderr)
            for log in ("app.log", "fake.log"):
                path = tmp / log
                if path.exists():
                    print(f"--- {log} (tail)\n{path.read_text()[-3000:]}", file=sys.stderr)
            return 1
        finally:
            profiler.stop()
            stop(app)
            stop(fake)
        return 0 if report(outcome, load) else 1


if __name__ == "__main__":
    sys.exit(main())
