"""The model catalogue: what a cached `GET /api/models` costs, and what single-flight saves.

In one run, against the fake OpenRouter serving a realistic catalogue (tests/presets/
catalogue_data.py, 320 models; the fake takes 50 ms per `/models`, like a nearby upstream):
- filtering + facets on the cached catalogue, against enriching the 320 models once (what a
  cache miss costs besides the fetch; the baseline);
- 50 concurrent cold requests with the single-flight cache, against 50 separate fetches.

Run: uv run python bench/catalogue.py   (a few seconds)
"""

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402

from chat import openrouter  # noqa: E402
from presets import catalogue  # noqa: E402
from tests.fake_openrouter import API_KEY, FakeOpenRouter  # noqa: E402
from tests.presets.catalogue_data import build_catalogue  # noqa: E402

FILTERS = {
    "input_modalities": "image",
    "context_length": {"min": 100000},
    "prompt_price_per_million": {"max": 5},
    "provider": ["openai", "anthropic", "google", "qwen"],
}


async def timed(func, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await func()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def main() -> None:
    fake = FakeOpenRouter().start()
    fake.models = build_catalogue()
    fake.models_delay = 0.05
    settings.OPENROUTER_BASE_URL = fake.base_url
    settings.OPENROUTER_API_KEY = API_KEY
    try:
        await catalogue.get_models()  # warm

        payload = {"data": fake.models}

        async def enrich():
            catalogue._build_snapshot(settings.OPENROUTER_BASE_URL, payload)

        async def filtered():
            selection = await catalogue.select_models(
                tools_only=True, search="pro", filters=FILTERS, sort="price"
            )
            catalogue.facets(selection.models)

        base = await timed(enrich, 100)
        heavy = await timed(filtered, 200)
        print(f"enrich 320 models (baseline):     {base * 1e3:7.3f} ms")
        print(f"filters + search + sort + facets: {heavy * 1e3:7.3f} ms  ({heavy / base:.2f}x)")

        fake.models_fetches = 0
        catalogue.clear_cache()
        started = time.perf_counter()
        await asyncio.gather(*(catalogue.get_models() for _ in range(50)))
        single = time.perf_counter() - started
        shared_fetches = fake.models_fetches

        fake.models_fetches = 0
        started = time.perf_counter()
        await asyncio.gather(*(openrouter.get_json("/models") for _ in range(50)))
        separate = time.perf_counter() - started
        print(
            f"50 cold requests, single-flight: {single * 1e3:7.1f} ms, "
            f"{shared_fetches} upstream fetch(es)"
        )
        print(
            f"50 separate fetches (baseline): {separate * 1e3:7.1f} ms, "
            f"{fake.models_fetches} upstream fetches  ({separate / single:.1f}x slower)"
        )
    finally:
        fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
