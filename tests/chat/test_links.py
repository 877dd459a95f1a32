"""`{% link %}` gives what `{% url %}` gives (chat/templatetags/links.py)."""

import pytest
from django.template import Context, Template
from django.urls import reverse, set_script_prefix

from chat.templatetags.links import link


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("chat:conversation", ["abc-123_x.y~z:1"]),
        ("chat:rename", ["s1"]),
        ("chat:delete", ["s1"]),
        ("chat:delete_message", ["s1", 42]),
        ("presets:generation_details", [7]),
        ("chat:home", []),
        # Characters reverse() quotes or escapes: these take the reverse() path.
        ("chat:conversation", ["with space"]),
        ("chat:conversation", ["ünï"]),
        ("chat:conversation", ["a{0}b"]),
        ("chat:conversation", ["%2F"]),
    ],
)
def test_link_is_what_reverse_gives(name, args):
    assert link(name, *args) == reverse(name, args=args)


def test_link_follows_the_script_prefix():
    try:
        set_script_prefix("/chat/")
        assert link("chat:delete_message", "s1", 5).startswith("/chat/c/s1/")
        assert link("chat:delete_message", "s1", 5) == reverse(
            "chat:delete_message", args=["s1", 5]
        )
    finally:
        set_script_prefix("/")


def test_the_tag_escapes_and_stores_like_url():
    rendered = Template(
        "{% load links %}<a href=\"{% link 'chat:conversation' sid %}\">"
        "{% link 'chat:delete' sid as u %}<b>{{ u }}</b>"
    ).render(Context({"sid": "s&1"}))
    expected = reverse("chat:conversation", args=["s&1"])
    assert f'href="{expected.replace("&", "&amp;")}"' in rendered
    assert reverse("chat:delete", args=["s&1"]).replace("&", "&amp;") in rendered
