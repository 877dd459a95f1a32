"""Serve tests/fake_openrouter.py's FakeOpenRouter in a process of its own, for benchmarks.

Usage: python -m bench._fake_upstream PORT TOKENS TOKEN_DELAY_SECONDS

Its own process keeps the fake's CPU apart from the app's and the client's. It runs on uvloop +
httptools like the app, so the baseline (calling the fake directly) is not slowed by the fake.
"""

import sys

from bench._common import serve_fake_upstream
from tests.fake_openrouter import FakeOpenRouter


def main() -> None:
    port, tokens, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    fake = FakeOpenRouter()
    fake.token_delay = delay
    fake.reply_tokens = [f"w{i} " for i in range(tokens)]
    serve_fake_upstream(fake, port)


if __name__ == "__main__":
    main()
