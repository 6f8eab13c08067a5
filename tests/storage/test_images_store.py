"""The content-addressed image store: one file per content, complete or absent, no leftovers."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import pytest

from storage import ImageStore
from storage.images import sniff_format
from tests.support.storage import png


def test_a_photo_is_stored_under_its_sha256_once(tmp_path):
    with ImageStore(tmp_path / "images") as images:
        first = images.put(png(1))
        again = images.put(png(1))
        digest = hashlib.sha256(png(1)).hexdigest()
        assert (first.sha256, first.path, first.size, first.created) == (
            digest,
            f"{digest[:2]}/{digest}",
            len(png(1)),
            True,
        )
        assert (again.sha256, again.created) == (digest, False)
        assert images.path(digest) == tmp_path / "images" / digest[:2] / digest
        assert images.read(digest) == png(1)
        assert images.leftover_temp_files() == []


def test_delete_removes_the_file(tmp_path):
    with ImageStore(tmp_path) as images:
        stored = images.put(png(2))
        assert images.delete(stored.sha256) and not images.exists(stored.sha256)
        assert not images.delete(stored.sha256)


def test_writing_needs_an_open_store(tmp_path):
    with pytest.raises(RuntimeError, match="open"):
        ImageStore(tmp_path).put(b"x")


def test_temporary_files_of_a_dead_process_are_removed_at_the_next_start(tmp_path):
    (tmp_path / ".tmp").mkdir()
    leftover = tmp_path / ".tmp" / "0123abcd.part"
    leftover.write_bytes(b"half an ima")
    with ImageStore(tmp_path) as images:
        assert not leftover.exists()
        assert images.leftover_temp_files() == []


HOLDER = textwrap.dedent(
    """
    import sys, time
    from storage import ImageStore
    images = ImageStore(sys.argv[1]).open()
    print("holding", flush=True)
    sys.stdin.read()
    """
)


def test_a_live_writers_temporary_files_are_never_removed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        in_flight = tmp_path / ".tmp" / "feedbeef.part"
        in_flight.write_bytes(b"being written by the other process")
        with ImageStore(tmp_path) as images:
            assert in_flight.exists()
            images.put(png(3))  # this process can still write
        assert in_flight.exists()
    finally:
        holder.kill()
        holder.wait()
    with ImageStore(tmp_path):
        assert not in_flight.exists()  # its writer is gone now


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00", "png"),
        (b"GIF89a\x01\x00", "gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"BM\x00\x00", "bmp"),
        (b"%PDF-1.7", None),
    ],
)
def test_the_format_is_recognised_from_the_first_bytes(head, expected):
    assert sniff_format(head) == expected


@pytest.mark.parametrize("bad", ["../" * 21 + "etc/passwd", "A" * 64, "g" * 64, "ab" * 31, ""])
def test_a_path_is_built_only_from_a_lowercase_hex_hash(tmp_path, bad) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(ValueError, match="SHA-256"):
        store.path(bad)
