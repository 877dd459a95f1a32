"""`{% link %}`: `{% url %}` for the URLs a page repeats (one per message and conversation).

`reverse()` resolves its pattern on every call: ~190 `{% url %}` tags took about a seventh of the
conversation page's server time. `link` reverses each URL name once, with marker arguments, and
fills the markers in afterwards, for arguments that `reverse()` would put in the URL unchanged
(letters, digits and `_.~:-`); any other argument goes through `reverse()` as usual.
"""

import re
from functools import lru_cache

from django import template
from django.urls import get_script_prefix, reverse

register = template.Library()

# Characters reverse() leaves as they are (unreserved in RFC 3986, plus ':').
_UNCHANGED = re.compile(r"[A-Za-z0-9_.~:-]+\Z")


def _marker(index: int) -> str:
    # Digits, so that an `int` converter takes it too.
    return f"91827364{index:02d}55"


@lru_cache(maxsize=128)
def _template(name: str, arity: int, prefix: str) -> str:
    url = reverse(name, args=[_marker(i) for i in range(arity)])
    url = url.replace("{", "{{").replace("}", "}}")
    for index in range(arity):
        url = url.replace(_marker(index), f"{{{index}}}")
    return url


@register.simple_tag
def link(name: str, *args: object) -> str:
    texts = [str(arg) for arg in args]
    if all(_UNCHANGED.match(text) for text in texts):
        return _template(name, len(texts), get_script_prefix()).format(*texts)
    return reverse(name, args=args)
