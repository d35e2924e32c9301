"""Kaniko's digest and image-name output files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pybuildless.image.descriptor import Digest
from pybuildless.image.outputs import (
    OutputFileError,
    write_builder_output,
    write_digest_file,
    write_image_name_tag_with_digest_file,
    write_image_name_with_digest_file,
)

DIGEST = Digest.of_bytes(b"manifest")
DESTS = ["gcr.io/foo/bar:123", "bob/image", "127.0.0.1:5000/team/app:v1", "busybox"]


def test_digest_file_has_no_newline_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "digest"
    write_digest_file(target, DIGEST)
    assert target.read_bytes() == str(DIGEST).encode()
    write_digest_file(target, str(Digest.of_bytes(b"other")))  # overwrite
    assert target.read_text() == str(Digest.of_bytes(b"other"))
    assert [p.name for p in target.parent.iterdir()] == ["digest"]  # no temp files left


def test_image_name_with_digest_lines(tmp_path: Path) -> None:
    target = tmp_path / "names"
    write_image_name_with_digest_file(target, DESTS, DIGEST)
    assert target.read_text() == (
        f"gcr.io/foo/bar@{DIGEST}\n"
        f"index.docker.io/bob/image@{DIGEST}\n"
        f"127.0.0.1:5000/team/app@{DIGEST}\n"
        f"index.docker.io/library/busybox@{DIGEST}\n"
    )


def test_image_name_tag_with_digest_lines(tmp_path: Path) -> None:
    target = tmp_path / "tags"
    write_image_name_tag_with_digest_file(target, DESTS[:2], DIGEST)
    # the exact text Kaniko's own test expects for these destinations
    assert target.read_text() == f"gcr.io/foo/bar:123@{DIGEST}\nindex.docker.io/bob/image:latest@{DIGEST}\n"


def test_builder_output(tmp_path: Path) -> None:
    write_builder_output(tmp_path, DESTS[2:], DIGEST)
    lines = [json.loads(line) for line in (tmp_path / "images").read_text().splitlines()]
    assert lines == [
        {"name": "127.0.0.1:5000/team/app:v1", "digest": str(DIGEST)},
        {"name": "index.docker.io/library/busybox:latest", "digest": str(DIGEST)},
    ]


def test_special_files_are_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_digest_file(fifo, DIGEST)
        assert os.read(fd, 200) == str(DIGEST).encode()
    finally:
        os.close(fd)
    assert fifo.is_fifo()


def test_errors_are_clear(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputFileError, match="--digest-file"):
        write_digest_file(blocker / "sub" / "digest", DIGEST)
    with pytest.raises(OutputFileError, match="--destination 'Bad/Name'"):
        write_image_name_with_digest_file(tmp_path / "n", ["Bad/Name"], DIGEST)
