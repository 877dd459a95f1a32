import pytest
from django.test import Client

from presets.models import Suggestion

pytestmark = pytest.mark.django_db


def send(client, method, body):
    return getattr(client, method)("/api/suggestions", body, content_type="application/json")


def test_suggestions_start_empty(api):
    response = api.get("/api/suggestions")
    assert response.status_code == 200
    assert response.json() == {"suggestions": []}


def test_post_adds_one_and_returns_the_full_list(api):
    first = send(api, "post", {"label": "Weather", "text": "What's the weather?"})
    assert first.status_code == 201
    second = send(api, "post", {"label": "Joke", "text": "Tell me a joke."})
    assert second.status_code == 201
    expected = [
        {"label": "Weather", "text": "What's the weather?"},
        {"label": "Joke", "text": "Tell me a joke."},
    ]
    assert second.json() == {"suggestions": expected}
    assert api.get("/api/suggestions").json() == {"suggestions": expected}


def test_put_replaces_all_in_order(api):
    send(api, "post", {"label": "Old", "text": "old"})
    items = [{"label": f"L{i}", "text": f"T{i}"} for i in range(3)]
    response = send(api, "put", {"suggestions": items})
    assert response.status_code == 200 and response.json() == {"suggestions": items}
    assert api.get("/api/suggestions").json() == {"suggestions": items}
    assert send(api, "put", {"suggestions": []}).json() == {"suggestions": []}


def test_delete_by_index(api):
    items = [{"label": f"L{i}", "text": f"T{i}"} for i in range(3)]
    send(api, "put", {"suggestions": items})
    response = api.delete("/api/suggestions/1")
    assert response.status_code == 200
    assert response.json() == {"suggestions": [items[0], items[2]]}
    assert api.get("/api/suggestions").json() == {"suggestions": [items[0], items[2]]}


@pytest.mark.parametrize("index", ["2", "99", "-1"])
def test_delete_a_bad_index_is_404(api, index):
    send(api, "put", {"suggestions": [{"label": "a", "text": "b"}, {"label": "c", "text": "d"}]})
    response = api.delete(f"/api/suggestions/{index}")
    assert response.status_code == 404
    assert "index" in response.json()["detail"]
    assert Suggestion.objects.count() == 2


def test_delete_a_non_numeric_index_is_422(api):
    assert api.delete("/api/suggestions/first").status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"label": "", "text": "x"},
        {"label": "x", "text": ""},
        {"label": "x"},
        {"label": "x" * 101, "text": "y"},
        {"label": "x", "text": "y", "send": True},
    ],
)
def test_invalid_suggestion_is_422(api, body):
    assert send(api, "post", body).status_code == 422
    assert Suggestion.objects.count() == 0


def test_put_validates_every_item(api):
    response = send(api, "put", {"suggestions": [{"label": "ok", "text": "ok"}, {"label": ""}]})
    assert response.status_code == 422
    assert send(api, "put", [{"label": "a", "text": "b"}]).status_code == 422
    assert Suggestion.objects.count() == 0


def test_too_many_suggestions_is_422(api):
    items = [{"label": str(i), "text": str(i)} for i in range(51)]
    assert send(api, "put", {"suggestions": items}).status_code == 422


def test_suggestions_need_authentication():
    assert Client().get("/api/suggestions").status_code == 401
    assert send(Client(), "post", {"label": "a", "text": "b"}).status_code == 401
    assert Client().delete("/api/suggestions/0").status_code == 401
