"""The composer's attachments in a real browser: paste, pick, progress, chips, errors, history."""

import base64
import re
import struct
import zlib
from pathlib import Path

import pytest
from playwright.sync_api import FilePayload, Page, Route, expect

from attachments.models import Attachment
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import private_attachments_storage

PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def png_bytes(width: int, height: int) -> bytes:
    """An RGB gradient PNG, made here so the test needs no files and no network."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = []
    for y in range(height):
        row = bytearray(b"\x00")
        for x in range(width):
            row += bytes((40 + 180 * x // width, 110 + 100 * y // height, 230 - 120 * x // width))
        rows.append(bytes(row))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(autouse=True)
def attachments_storage(settings, tmp_path) -> Path:
    """Uploads go to a private directory per test, not the project's data/."""
    return private_attachments_storage(settings, tmp_path)


def payload(name: str, mime_type: str, data: bytes) -> FilePayload:
    return {"name": name, "mimeType": mime_type, "buffer": data}


def open_new_chat(page: Page, url: str) -> None:
    page.goto(f"{url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")


def paste_png(page: Page, data: bytes, name: str = "screenshot.png") -> None:
    """Paste as the browser does for a copied image: a paste event carrying a file."""
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: "image/png" }));
            const prompt = document.getElementById("prompt");
            prompt.focus();
            prompt.dispatchEvent(new ClipboardEvent("paste", {
                clipboardData: data, bubbles: true, cancelable: true,
            }));
        }""",
        [base64.b64encode(data).decode(), name],
    )


def wait_image_loaded(page: Page, selector: str, width: int) -> None:
    """Wait until the image has really loaded (signed URL served, bytes decoded). History
    thumbnails load lazily, so each poll scrolls the (possibly re-rendered) image into view."""
    page.wait_for_function(
        """([selector, width]) => {
            const img = document.querySelector(selector);
            if (!img) return false;
            img.scrollIntoView({ block: "nearest" });
            return img.complete && img.naturalWidth === width;
        }""",
        arg=[selector, width],
    )


def test_paste_an_image_see_progress_and_thumbnail_send_it_and_find_it_after_reload(
    page: Page, logged_in, user, fake_openrouter
):
    png = png_bytes(64, 48)
    open_new_chat(page, logged_in.url)
    # Hold the upload until the progress bar has been seen, then let it through.
    held: list[Route] = []
    page.route("**/api/uploads", lambda route: held.append(route))

    paste_png(page, png)
    progress = page.locator("#composer-attachments .composer-attachment.uploading progress")
    expect(progress).to_be_visible()
    expect(page.locator("#prompt")).to_have_value("")  # the paste attached, it typed nothing
    assert held, "the upload request was sent"
    held[0].continue_()

    thumb = page.locator("#composer-attachments .composer-attachment-image img.attachment-thumb")
    expect(thumb).to_be_visible()
    expect(progress).to_have_count(0)
    wait_image_loaded(page, "#composer-attachments img", 64)
    attachment = Attachment.objects.get(user=user)
    assert attachment.original_name == "screenshot.png"
    assert attachment.message_id is None

    page.locator("#prompt").fill("What is in this picture?")
    page.locator("#prompt").press("Enter")
    expect(page.locator(".msg-assistant.status-complete")).to_have_count(1)
    expect(page.locator("#composer-attachments li")).to_have_count(0)

    # The chat request (a title request may follow it) carries the image.
    user_contents = [
        m["content"]
        for r in fake_openrouter.requests
        for m in r["body"].get("messages", [])
        if m["role"] == "user" and isinstance(m["content"], list)
    ]
    assert len(user_contents) == 1, fake_openrouter.requests
    parts = user_contents[0]
    assert {"type": "text", "text": "What is in this picture?"} in parts
    [image] = [p for p in parts if p["type"] == "image_url"]
    prefix = "data:image/png;base64,"
    assert image["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image["image_url"]["url"][len(prefix) :]) == png

    page.reload()
    history = page.locator(".msg-user .msg-attachments img.attachment-thumb")
    expect(history).to_have_count(1)
    expect(page.locator(".msg-user .msg-body")).to_contain_text("What is in this picture?")
    wait_image_loaded(page, ".msg-user .msg-attachments img", 64)
    attachment.refresh_from_db()
    assert attachment.message_id is not None


def test_attach_button_shows_a_pdf_chip_and_removing_it_deletes_the_upload(
    page: Page, logged_in, user
):
    open_new_chat(page, logged_in.url)
    page.locator("#attach-input").set_input_files(
        files=[payload("report.pdf", "application/pdf", PDF)]
    )
    chip = page.locator("#composer-attachments .composer-attachment-pdf")
    expect(chip).to_be_visible()
    expect(chip.locator(".attachment-chip-name")).to_have_text("report.pdf")
    expect(chip.locator("input[name=attachment_ids]")).to_have_count(1)
    attachment = Attachment.objects.get(user=user)
    assert chip.get_attribute("data-attachment-id") == attachment.public_id

    chip.locator(".composer-attachment-remove").click()
    expect(chip).to_have_count(0)
    assert not Attachment.objects.filter(pk=attachment.pk, delete_pending=False).exists()


def test_a_file_alone_is_a_message_and_reaches_the_model_as_a_file_part(
    page: Page, logged_in, user, fake_openrouter
):
    open_new_chat(page, logged_in.url)
    page.locator("#attach-input").set_input_files(
        files=[payload("report.pdf", "application/pdf", PDF)]
    )
    expect(page.locator("#composer-attachments .composer-attachment-pdf")).to_be_visible()
    page.locator("#prompt").press("Enter")
    expect(page.locator(".msg-assistant.status-complete")).to_be_visible()
    expect(page.locator(".msg-user .msg-attachments .attachment-chip")).to_have_count(1)
    page.reload()
    expect(page.locator(".msg-user .attachment-chip-name")).to_have_text("report.pdf")
    streamed = [r for r in fake_openrouter.requests if r["body"].get("stream")]
    parts = streamed[-1]["body"]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["file"]
    assert parts[0]["file"]["filename"] == "report.pdf"
    assert parts[0]["file"]["file_data"].startswith("data:application/pdf;base64,")


def test_an_svg_renamed_png_is_refused_with_a_clear_message(page: Page, logged_in, user):
    open_new_chat(page, logged_in.url)
    page.locator("#attach-input").set_input_files(files=[payload("innocent.png", "image/png", SVG)])
    notice = page.locator("#notices .notice-error")
    expect(notice).to_contain_text("innocent.png was refused")
    expect(notice).to_contain_text("Unsupported file type")
    expect(page.locator("#composer-attachments li")).to_have_count(0)
    assert not Attachment.objects.filter(user=user).exists()


def test_screenshot_of_a_message_with_an_image_and_a_pdf(
    page: Page, logged_in, user, fake_openrouter
):
    fake_openrouter.reply_tokens = [
        "The chart ", "climbs ", "steadily ", "and ", "the ", "report ", "agrees: ",
        "revenue ", "is ", "up ", "**12%**.",
    ]  # fmt: skip
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1200, "height": 760})
    open_new_chat(page, logged_in.url)
    page.locator("#attach-input").set_input_files(
        files=[
            payload("chart.png", "image/png", png_bytes(320, 200)),
            payload("quarterly-report.pdf", "application/pdf", PDF),
        ]
    )
    expect(
        page.locator("#composer-attachments .composer-attachment:not(.uploading)")
    ).to_have_count(2)
    page.locator("#prompt").fill("Here are the chart and the report: what stands out?")
    page.locator("#prompt").press("Enter")
    expect(page.locator(".msg-assistant.status-complete")).to_have_count(1)
    page.reload()
    expect(page.locator(".msg-user .msg-attachment")).to_have_count(2)
    wait_image_loaded(page, ".msg-user .msg-attachments img", 320)
    # A second set waiting in the composer, to show the chips there too.
    page.locator("#attach-input").set_input_files(
        files=[
            payload("photo.png", "image/png", png_bytes(96, 96)),
            payload("notes.pdf", "application/pdf", PDF),
        ]
    )
    expect(
        page.locator("#composer-attachments .composer-attachment:not(.uploading)")
    ).to_have_count(2)
    wait_image_loaded(page, "#composer-attachments img", 96)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "attachments.png"))


def test_dropping_files_on_the_chat_column_uploads_them(page: Page, logged_in, user):
    open_new_chat(page, logged_in.url)
    page.evaluate(
        """([b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "dropped.pdf", { type: "application/pdf" }));
            const target = document.getElementById("messages");
            for (const type of ["dragenter", "dragover"]) {
                target.dispatchEvent(new DragEvent(type, {
                    dataTransfer: data, bubbles: true, cancelable: true,
                }));
            }
            window.highlighted = document.getElementById("chat").classList.contains("drop-target");
            target.dispatchEvent(new DragEvent("drop", {
                dataTransfer: data, bubbles: true, cancelable: true,
            }));
        }""",
        [base64.b64encode(PDF).decode()],
    )
    assert page.evaluate("window.highlighted"), "the column shows where to drop"
    expect(page.locator("#chat")).not_to_have_class(re.compile(r"drop-target"))
    chip = page.locator("#composer-attachments .composer-attachment-pdf")
    expect(chip.locator(".attachment-chip-name")).to_have_text("dropped.pdf")
    assert Attachment.objects.get(user=user).original_name == "dropped.pdf"


def test_a_file_over_the_limit_is_refused_with_a_clear_message(
    page: Page, logged_in, user, settings
):
    settings.ATTACHMENTS_MAX_SIZE_BYTES = 50_000
    open_new_chat(page, logged_in.url)
    big = png_bytes(300, 300)
    assert len(big) > 50_000
    page.locator("#attach-input").set_input_files(files=[payload("huge.png", "image/png", big)])
    expect(page.locator("#notices .notice-error")).to_contain_text("huge.png is too large")
    expect(page.locator("#composer-attachments li")).to_have_count(0)
    assert not Attachment.objects.filter(user=user).exists()
