"""A realistic OpenRouter catalogue, built deterministically (no network).

Entries follow the schema OpenRouter publishes for `GET /api/v1/models`: prices are strings of
USD per token, modalities live under `architecture`, limits under `top_provider`. A handful of
well-known models are written out by hand; the rest are generated from a fixed seed across real
provider families, so filters and facets meet the variety of the real catalogue (free models,
variable-price routers, image/file/audio input, image output, models without tools).
"""

import random
from typing import Any

TEXT_PARAMS = [
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "seed",
]
OPEN_WEIGHT_PARAMS = [*TEXT_PARAMS, "top_k", "min_p", "repetition_penalty", "logit_bias"]

# provider prefix, display name, tokenizer (OpenRouter's "series"), slug stems, input modalities
FAMILIES: list[tuple[str, str, str, list[str], list[str]]] = [
    ("openai", "OpenAI", "GPT", ["gpt-4.1", "gpt-4o", "gpt-5", "o4"], ["text", "image", "file"]),
    ("anthropic", "Anthropic", "Claude", ["claude-3.5", "claude-sonnet-4", "claude-opus-4"],
     ["text", "image", "file"]),
    ("google", "Google", "Gemini", ["gemini-2.0", "gemini-2.5", "gemma-3"],
     ["text", "image", "file", "audio"]),
    ("meta-llama", "Meta", "Llama3", ["llama-3.1", "llama-3.3", "llama-guard"], ["text"]),
    ("meta-llama", "Meta", "Llama4", ["llama-4-scout", "llama-4-maverick"], ["text", "image"]),
    ("mistralai", "Mistral", "Mistral", ["mistral-small", "mistral-large", "codestral",
     "ministral"], ["text"]),
    ("qwen", "Qwen", "Qwen3", ["qwen3", "qwen3-coder", "qwen3-vl"], ["text", "image"]),
    ("deepseek", "DeepSeek", "DeepSeek", ["deepseek-chat", "deepseek-r1", "deepseek-v3.1"],
     ["text"]),
    ("x-ai", "xAI", "Grok", ["grok-3", "grok-4"], ["text", "image"]),
    ("cohere", "Cohere", "Cohere", ["command-r", "command-a"], ["text"]),
    ("amazon", "Amazon", "Nova", ["nova-lite", "nova-pro"], ["text", "image"]),
    ("microsoft", "Microsoft", "Other", ["phi-4", "wizardlm-2"], ["text"]),
    ("nousresearch", "Nous", "Llama3", ["hermes-3", "hermes-4"], ["text"]),
    ("perplexity", "Perplexity", "Other", ["sonar", "sonar-pro"], ["text", "image"]),
]  # fmt: skip
SIZES = ["mini", "small", "medium", "large", "8b", "70b", "405b", "flash", "pro", "turbo"]
CONTEXTS = [4096, 8192, 32768, 65536, 131072, 200000, 262144, 1048576]

# Written out by hand so tests can name them.
NAMED: list[dict[str, Any]] = [
    {
        "id": "openai/gpt-4o-mini",
        "canonical_slug": "openai/gpt-4o-mini",
        "name": "OpenAI: GPT-4o-mini",
        "created": 1721260800,
        "description": "GPT-4o mini is OpenAI's affordable small model with vision.",
        "context_length": 128000,
        "architecture": {
            "modality": "text+image+file->text",
            "input_modalities": ["text", "image", "file"],
            "output_modalities": ["text"],
            "tokenizer": "GPT",
            "instruct_type": None,
        },
        "pricing": {
            "prompt": "0.00000015",
            "completion": "0.0000006",
            "request": "0",
            "image": "0.000217",
            "web_search": "0.01",
            "internal_reasoning": "0",
            "input_cache_read": "0.000000075",
        },
        "top_provider": {
            "context_length": 128000,
            "max_completion_tokens": 16384,
            "is_moderated": True,
        },
        "per_request_limits": None,
        "supported_parameters": [
            *TEXT_PARAMS,
            "tools",
            "tool_choice",
            "response_format",
            "structured_outputs",
            "logprobs",
        ],
    },
    {
        "id": "anthropic/claude-sonnet-4",
        "canonical_slug": "anthropic/claude-4-sonnet-20250522",
        "name": "Anthropic: Claude Sonnet 4",
        "created": 1747930371,
        "description": "Claude Sonnet 4 balances capability and speed, with extended thinking.",
        "context_length": 200000,
        "architecture": {
            "modality": "text+image+file->text",
            "input_modalities": ["text", "image", "file"],
            "output_modalities": ["text"],
            "tokenizer": "Claude",
            "instruct_type": None,
        },
        "pricing": {
            "prompt": "0.000003",
            "completion": "0.000015",
            "request": "0",
            "image": "0.0048",
            "web_search": "0.01",
            "internal_reasoning": "0",
            "input_cache_read": "0.0000003",
            "input_cache_write": "0.00000375",
        },
        "top_provider": {
            "context_length": 200000,
            "max_completion_tokens": 64000,
            "is_moderated": True,
        },
        "per_request_limits": None,
        "supported_parameters": [
            "max_tokens",
            "temperature",
            "top_p",
            "top_k",
            "stop",
            "reasoning",
            "include_reasoning",
            "tools",
            "tool_choice",
        ],
    },
    {
        "id": "meta-llama/llama-3.1-8b-instruct:free",
        "canonical_slug": "meta-llama/llama-3.1-8b-instruct",
        "name": "Meta: Llama 3.1 8B Instruct (free)",
        "created": 1721692800,
        "description": "Meta's small open model, free tier.",
        "context_length": 131072,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": "Llama3",
            "instruct_type": "llama3",
        },
        "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
        "top_provider": {
            "context_length": 131072,
            "max_completion_tokens": 4096,
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": OPEN_WEIGHT_PARAMS,
    },
    {
        "id": "openrouter/auto",
        "canonical_slug": "openrouter/auto",
        "name": "Auto Router",
        "created": 1699401600,
        "description": "Routes each prompt to a suitable model; the price is the chosen model's.",
        "context_length": 2000000,
        "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
            "tokenizer": "Router",
            "instruct_type": None,
        },
        "pricing": {"prompt": "-1", "completion": "-1"},
        "top_provider": {
            "context_length": None,
            "max_completion_tokens": None,
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": [],
    },
    {
        "id": "google/gemini-2.5-flash-image",
        "canonical_slug": "google/gemini-2.5-flash-image",
        "name": "Google: Gemini 2.5 Flash Image",
        "created": 1759870431,
        "description": "Image generation and editing model.",
        "context_length": 32768,
        "architecture": {
            "modality": "text+image->text+image",
            "input_modalities": ["image", "text"],
            "output_modalities": ["image", "text"],
            "tokenizer": "Gemini",
            "instruct_type": None,
        },
        "pricing": {
            "prompt": "0.0000003",
            "completion": "0.0000025",
            "request": "0",
            "image": "0.001238",
        },
        "top_provider": {
            "context_length": 32768,
            "max_completion_tokens": 8192,
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": ["max_tokens", "temperature", "top_p", "seed", "stop"],
    },
]


def _price(rng: random.Random, low: float, high: float) -> str:
    return f"{rng.uniform(low, high) / 1_000_000:.10f}".rstrip("0").rstrip(".")


def generated_model(rng: random.Random, index: int) -> dict[str, Any]:
    prefix, display, tokenizer, stems, inputs = FAMILIES[index % len(FAMILIES)]
    stem = rng.choice(stems)
    size = rng.choice(SIZES)
    slug = f"{stem}-{size}-v{index}"
    free = rng.random() < 0.08
    model_id = f"{prefix}/{slug}" + (":free" if free else "")
    inputs = ["text"] if rng.random() < 0.3 else list(inputs)
    outputs = ["text"]
    params = list(OPEN_WEIGHT_PARAMS if prefix not in {"openai", "anthropic"} else TEXT_PARAMS)
    if rng.random() < 0.7:
        params += ["tools", "tool_choice"]
    if rng.random() < 0.35:
        params += ["reasoning", "include_reasoning"]
    if rng.random() < 0.4:
        params += ["response_format", "structured_outputs"]
    context = rng.choice(CONTEXTS)
    prompt = "0" if free else _price(rng, 0.02, 15)
    completion = "0" if free else _price(rng, 0.05, 75)
    return {
        "id": model_id,
        "canonical_slug": f"{prefix}/{slug}-2025{index % 12 + 1:02d}",
        "name": f"{display}: {stem.replace('-', ' ').title()} {size.upper()} v{index}"
        + (" (free)" if free else ""),
        "created": 1_690_000_000 + index * 86_400 + rng.randrange(86_400),
        "description": f"{display}'s {size} {stem} model"
        + (", with vision" if "image" in inputs else "")
        + (", good at code" if "coder" in stem or "codestral" in stem else "")
        + ".",
        "context_length": context,
        "architecture": {
            "modality": f"{'+'.join(inputs)}->{'+'.join(outputs)}",
            "input_modalities": inputs,
            "output_modalities": outputs,
            "tokenizer": tokenizer,
            "instruct_type": None if prefix in {"openai", "anthropic", "google"} else "chatml",
        },
        "pricing": {
            "prompt": prompt,
            "completion": completion,
            "request": "0",
            "image": "0" if "image" not in inputs else _price(rng, 100, 5000),
            "web_search": "0",
            "internal_reasoning": "0",
        },
        "top_provider": {
            "context_length": context,
            "max_completion_tokens": rng.choice([None, 4096, 8192, 16384, 32768]),
            "is_moderated": prefix in {"openai", "anthropic"},
        },
        "per_request_limits": None,
        "supported_parameters": params,
    }


def build_catalogue(count: int = 320, seed: int = 5) -> list[dict[str, Any]]:
    """`count` models: the named ones first, then generated ones (same seed, same catalogue)."""
    rng = random.Random(seed)
    models = [dict(m) for m in NAMED]
    models += [generated_model(rng, i) for i in range(count - len(NAMED))]
    return models
