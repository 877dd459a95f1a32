"""Server time and query count of the conversation page for a 1,000-message conversation.

In a throwaway DATA_DIR (SQLite, migrated), makes a staff user with 30 conversations in the
sidebar, and conversations of 10, 100 and 1,000 messages (user/assistant pairs whose answers
are realistic Markdown rendered and stored the way the app stores them). Then times
`GET /c/<session_id>/` in-process with django.test.Client, logged in, many times each
(interleaved, so a drift over the run hits every size alike), and counts the queries of one
request of each with CaptureQueriesContext. The 10-message conversation is the baseline.
See bench/README.md.

Run: uv run python bench/page_load.py   (about 20 seconds)
"""

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import percentile

SIZES = (10, 100, 1000)  # messages in the conversation; the first is the baseline
TARGET_SIZE = 1000
TARGET_MS = 50.0

_ANSWERS = [
    """Here is how that works, in short:

1. **Read** the file with `open()` and iterate over its lines.
2. Split each line on commas; a real CSV needs the `csv` module for quoted fields.
3. Keep a running total in a dict keyed by the first column.

```python
import csv
from collections import Counter

totals = Counter()
with open("sales.csv", newline="") as f:
    for row in csv.DictReader(f):
        totals[row["region"]] += float(row["amount"])
print(totals.most_common(3))
```

That prints the three biggest regions. For large files, see [the docs](https://docs.python.org/3/library/csv.html).""",
    """Good question. The short answer is *it depends* on what you optimise for:

| Option | Latency | Cost |
|---|---|---|
| Cache in process | lowest | memory per worker |
| Redis | ~1 ms | one more service |
| Database | 2-10 ms | none extra |

If you run a single process, the in-process cache is simplest. Once you add workers, move to
Redis so they agree. Either way, set an expiry so stale entries go away on their own.""",
    """Sure. A few things to check, in order:

- Is the service running? `systemctl status nginx` shows it.
- Does the config parse? `nginx -t` tells you which line is wrong.
- Is the port free? `ss -ltnp | grep :80` lists who listens there.

> Most "502 Bad Gateway" errors come from the upstream app not listening where nginx expects.

Fix the first one that fails and try again; tell me what you see if it still does not work.""",
    """The Treaty of Westphalia (1648) ended the Thirty Years' War and is often taken as the start
of the modern state system: each ruler decides the religion of their own territory, and states
deal with each other as formally equal.

Historians debate how new that really was, but the idea of **sovereignty** that it stands for
still shapes international law today.""",
]
_QUESTIONS = [
    "How do I sum a column of a CSV file by region in Python?",
    "Should I cache this in Redis or in the process? We might add workers later.",
    "nginx gives me 502 Bad Gateway after the deploy, where do I start?",
    "Why is the Peace of Westphalia considered so important?\nShort answer please.",
]


def _setup_django(tmp: Path) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATA_DIR": str(tmp),
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "REDIS_URL": "",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "OPENROUTER_API_KEY": "sk-or-bench",  # no banner; nothing is sent anywhere
            "MCP_HOUSEKEEPING_DEFAULT": "false",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _make_data() -> tuple[Any, dict[int, Any]]:
    from decimal import Decimal

    from django.contrib.auth import get_user_model

    from chat.models import Conversation, Message
    from chat.rendering import render_markdown

    rng = random.Random(7)
    user = get_user_model().objects.create_user("bench", password="x", is_staff=True)
    for i in range(30):
        Conversation.objects.create(user=user, title=f"Earlier chat {i}", model="openai/gpt-4o")
    answers = [(text, str(render_markdown(text))) for text in _ANSWERS]
    conversations = {}
    for size in SIZES:
        conversation = Conversation.objects.create(
            user=user, title=f"{size} messages", model="openai/gpt-4o"
        )
        rows = []
        for i in range(size // 2):
            question = f"{rng.choice(_QUESTIONS)} ({i})"
            text, html = rng.choice(answers)
            rows.append(Message(conversation=conversation, role="user", content=question))
            rows.append(
                Message(
                    conversation=conversation,
                    role="assistant",
                    content=text,
                    html=html,
                    model="openai/gpt-4o",
                    finish_reason="stop",
                    usage={"prompt_tokens": 900, "completion_tokens": 250, "total_tokens": 1150},
                    cost=Decimal("0.00123"),
                    duration_ms=rng.randint(800, 6000),
                )
            )
        Message.objects.bulk_create(rows)
        for user_message, answer in zip(rows[::2], rows[1::2], strict=True):
            answer.parent_id = user_message.pk
        Message.objects.bulk_update(rows[1::2], ["parent"])
        assert conversation.messages.count() == size
        conversations[size] = conversation
    return user, conversations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat", type=int, default=200, help="timed requests per size (default 200)"
    )
    parser.add_argument(
        "--show-queries", action="store_true", help="print the SQL of the 1,000-message page"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="also profile 50 requests of the 1,000-message page with pyinstrument (if "
        "installed) and write an HTML report to FILE",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp_name:
        _setup_django(Path(tmp_name))
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        user, conversations = _make_data()
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        urls = {size: f"/c/{c.session_id}/" for size, c in conversations.items()}

        def get(size: int) -> float:
            started = time.perf_counter()
            response = client.get(urls[size])
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise SystemExit(f"GET {urls[size]} answered {response.status_code}")
            return elapsed

        load_start = os.getloadavg()[0]
        for size in SIZES:  # warm up: templates compiled, caches filled
            for _ in range(10):
                get(size)
        queries: dict[int, list[str]] = {}
        sizes_bytes: dict[int, int] = {}
        for size in SIZES:
            with CaptureQueriesContext(connection) as captured:
                response = client.get(urls[size])
            queries[size] = [q["sql"] for q in captured.captured_queries]
            sizes_bytes[size] = len(response.content)
        times: dict[int, list[float]] = {size: [] for size in SIZES}
        for _ in range(args.repeat):
            for size in SIZES:
                times[size].append(get(size))
        load = (load_start, os.getloadavg()[0])

        if args.profile:
            try:
                from pyinstrument import Profiler
            except ImportError:
                raise SystemExit(
                    "--profile needs pyinstrument (not a project dependency): "
                    "uv pip install pyinstrument"
                ) from None
            profiler = Profiler(interval=0.0005)
            with profiler:
                for _ in range(50):
                    get(TARGET_SIZE)
            Path(args.profile).write_text(profiler.output_html())
            print(profiler.output_text(unicode=False, color=False, show_all=False))

    base = SIZES[0]
    print()
    print(
        "Conversation page: GET /c/<session_id>/ in-process (django.test.Client), logged-in staff"
    )
    print(
        f"{'messages':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50 x base':>11} {'queries':>8} {'KB':>6}"
    )
    for size in SIZES:
        p50 = percentile(times[size], 50) * 1000
        p99 = percentile(times[size], 99) * 1000
        ratio = p50 / (percentile(times[base], 50) * 1000)
        print(
            f"{size:9} {p50:8.2f} {p99:8.2f} {ratio:11.2f} {len(queries[size]):8} "
            f"{sizes_bytes[size] / 1024:6.1f}"
        )
    print(f"({args.repeat} requests per size; the {base}-message conversation is the baseline)")
    if args.show_queries:
        print("\nQueries of the 1,000-message page:")
        for sql in queries[TARGET_SIZE]:
            print(f"  {sql}")

    met = True
    print()
    for q in (50, 99):
        value = percentile(times[TARGET_SIZE], q) * 1000
        ok = value <= TARGET_MS
        met = met and ok
        print(
            f"{TARGET_SIZE}-message page p{q}: {value:.2f} ms   <= {TARGET_MS:g} ms  "
            f"{'MET' if ok else 'MISSED'}"
        )
    counts = {size: len(queries[size]) for size in SIZES}
    constant = len(set(counts.values())) == 1
    met = met and constant
    print(
        f"queries constant in the conversation's length: {counts}  "
        f"{'MET' if constant else 'MISSED'}"
    )
    print()
    print("All targets met." if met else "Some targets were MISSED.")
    print(
        f"(load average at start/end: {load[0]:.2f}/{load[1]:.2f} on {os.cpu_count()} CPUs; "
        "other load on the machine skews the figures)"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
