"""List views run a fixed number of queries, whatever the list's length."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from presets.models import Preset, Suggestion

pytestmark = pytest.mark.django_db


def queries(client: Client, path: str) -> int:
    client.get(path)  # first-request work (token last-used stamp, settings row) aside
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    return len(captured)


def make_presets(count: int) -> None:
    start = Preset.objects.count()
    Preset.objects.bulk_create(Preset(name=f"p{start + i}") for i in range(count))


def make_suggestions(count: int) -> None:
    Suggestion.objects.bulk_create(
        Suggestion(label=f"s{i}", text="t", position=i) for i in range(count)
    )


@pytest.mark.parametrize(
    ("path", "make"),
    [
        ("/api/presets/", make_presets),
        ("/api/suggestions", make_suggestions),
    ],
)
def test_api_lists_query_count_does_not_grow(api, path, make):
    make(2)
    small = queries(api, path)
    make(40)
    assert queries(api, path) == small


def test_presets_panel_query_count_does_not_grow(user, fake_openrouter):
    client = Client()
    client.force_login(user)
    make_presets(2)
    small = queries(client, "/models/presets/")
    make_presets(40)
    assert queries(client, "/models/presets/") == small
