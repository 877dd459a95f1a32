"""Helpers shared by the benchmarks: ports, subprocesses, CPU time, percentiles."""

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

REPO = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def reference_cpu_ms() -> float:
    """CPU milliseconds of a fixed pure-Python workload shaped like a streaming server's
    (parse a chunk of JSON, build an event, format and encode it), best of 5.

    Printed by the benchmarks so their absolute CPU figures can be set against the machine's
    speed: the same tree gives very different ms per 1,000 tokens on different machines."""
    import json

    chunk = json.dumps(
        {
            "id": "gen-1",
            "model": "fake/ok",
            "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}],
        }
    )
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(20_000):
            data = json.loads(chunk)
            text = data["choices"][0]["delta"]["content"]
            line = f"event: message\ndata: {chunk}\n\n".encode()
            _ = (text.strip(), line.split(b"\n"), {"name": "message", "data": data})
        best = min(best, time.process_time() - start)
    return best * 1000


def machine_notes(load: tuple[float, float]) -> list[str]:
    """The closing lines of a streaming bench: the load around the run and the machine's speed,
    for reading its absolute figures."""
    return [
        f"(load average at start/end: {load[0]:.2f}/{load[1]:.2f} on {os.cpu_count()} CPUs; "
        "client, app and fake share them, so other load on the machine skews the figures)",
        f"(machine speed: the reference workload took {reference_cpu_ms():.1f} ms of CPU; "
        "absolute CPU figures scale with it, see bench/README.md)",
    ]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def wait_until_up(
    proc: subprocess.Popen, url: str, headers: dict[str, str] | None = None, timeout: float = 30
) -> None:
    """Poll `url` until it answers 200; fail early when the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before serving")
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout:g} s")


def stop(proc: subprocess.Popen | None) -> None:
    """Stop a process this benchmark started (by its own handle, never by name)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def serve_fake_upstream(fake, port: int) -> None:
    """Serve a FakeOpenRouter as the benches do (uvloop + httptools), until killed."""
    import uvicorn

    uvicorn.run(
        fake.app(),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
    )


def prepare_app_database(env: dict[str, str], script: str) -> str:
    """Migrate the run's throwaway database, run a setup script in `manage.py shell` against it
    and return the last line it printed (a token or a session key)."""
    import sys

    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True)
    out = subprocess.run(
        [*manage, "shell", "-c", script],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def throwaway_postgres(server_url: str, name: str) -> Iterator[str]:
    """A new PostgreSQL database on the server of `server_url` for one run (dropped after it,
    its leftover sessions ended first); yields its URL."""
    import psycopg

    parts = urlsplit(server_url)
    database = f"{name}_{os.getpid()}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{database}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def postgres_connections(url: str) -> int:
    """Sessions open on the database of `url`, besides the one asking."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0
