"""What the attachment checks cost on an upload, against storing the same bytes directly.

In one process with a throwaway DATA_DIR and SQLite: for PNG files of 1 MiB and 10 MiB, times
`attachments.services.attach_file` (magic-number sniffing, the whole-file markup scan, the
SHA-256, the storage write and the row) against the baseline of `storage.save` of the same bytes
into the same local storage, measured in the same run, and prints the ratio. Also times building
the model's inline data URL (base64) for the same files.

Run: uv run python bench/attachments_upload.py   (a few seconds)
"""

import os
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROUNDS = 7


def png(size: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    # Incompressible-looking filler, like real image data (and free of markup by construction).
    filler = bytes((i * 131 + 7) % 251 for i in range(size - len(head) - 12))
    return head + chunk(b"IDAT", filler)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    data_dir = tempfile.mkdtemp(prefix="bench-attachments-")
    os.environ["DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    from attachments import services
    from attachments.storage import get_storage

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench")
    storage = get_storage()
    print(f"{'size':>8} {'baseline save':>14} {'attach_file':>12} {'ratio':>6} {'data URL':>9}")
    for mib in (1, 10):
        data = png(mib * 1024 * 1024)
        baseline, checked, inline = [], [], []
        for i in range(ROUNDS):
            started = time.perf_counter()
            storage.save(f"baseline/{mib}-{i}.png", SimpleUploadedFile("a.png", data))
            baseline.append(time.perf_counter() - started)
            started = time.perf_counter()
            attachment = services.attach_file(user, "bench", SimpleUploadedFile("a.png", data))
            checked.append(time.perf_counter() - started)
            started = time.perf_counter()
            services._data_url(attachment)
            inline.append(time.perf_counter() - started)
        base, check = median(baseline), median(checked)
        print(
            f"{mib:>5} MiB {base * 1000:>11.1f} ms {check * 1000:>9.1f} ms "
            f"{check / base:>5.1f}x {median(inline) * 1000:>6.1f} ms"
        )
    shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
