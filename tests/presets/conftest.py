import pytest

from presets import catalogue
from tests.presets.catalogue_data import build_catalogue

FAKE_MODELS = [
    {
        "id": "fake/ok",
        "name": "Fake: OK",
        "context_length": 8192,
        "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
        "pricing": {"prompt": "0.000001", "completion": "0.000002"},
        "top_provider": {"context_length": 8192, "max_completion_tokens": 4096},
        "supported_parameters": [
            "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "frequency_penalty",
            "presence_penalty", "repetition_penalty", "min_p", "reasoning", "include_reasoning",
            "tools", "tool_choice",
        ],
    },
    {
        "id": "fake/reasoning",
        "name": "Fake: Reasoning",
        "context_length": 8192,
        "pricing": {"prompt": "0", "completion": "0"},
        "supported_parameters": ["max_tokens", "temperature", "seed", "stop", "reasoning"],
    },
]  # fmt: skip


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Test users get passwords; the production hasher costs ~0.4 s per user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_catalogue_cache():
    """The catalogue is cached per process: every test starts (and leaves) it empty."""
    catalogue.clear_cache()
    yield
    catalogue.clear_cache()


@pytest.fixture
def catalogue_models(fake_openrouter):
    """The fake serves a realistic catalogue (hundreds of models) plus the fake/* models."""
    saved = fake_openrouter.models
    models = [*FAKE_MODELS, *build_catalogue()]
    fake_openrouter.models = models
    yield models
    fake_openrouter.models = saved
