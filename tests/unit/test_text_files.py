"""A text corpus folder: hidden, _-prefixed, binary and compressed files are not trained on."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bigmodel.data.text import prepare_text
from bigmodel.errors import BigModelError


def test_hidden_binary_and_compressed_files_are_skipped(tmp_path: Path):
    src = tmp_path / "corpus"
    (src / ".git").mkdir(parents=True)
    (src / "_tmp").mkdir()
    (src / "a.txt").write_text("visible text " * 50)
    (src / ".git" / "config").write_text("SECRET_IN_DOTGIT")
    (src / "_tmp" / "x.txt").write_text("UNDERSCORE_FILE")
    (src / "_SUCCESS").write_text("SUCCESSMARK")
    (src / "changelog.gz").write_bytes(gzip.compress(b"GZIPPED" * 100))
    (src / "binary.bin").write_bytes(b"\x7fELF\x00\x01BINARYMARK")
    m = prepare_text(str(src), tmp_path / "out", context=16, val_fraction=0.2)
    data = b"".join(
        bytes(row)
        for f in sorted((tmp_path / "out").rglob("*.parquet"))
        for col in pq.read_table(f).columns
        for row in col.to_pylist()
    )
    assert b"visible text" in data and m.splits["train"].rows > 0
    for secret in (b"SECRET", b"UNDERSCORE", b"SUCCESSMARK", b"\x1f\x8b", b"BINARYMARK"):
        assert secret not in data
    only = tmp_path / "only-binary"
    only.mkdir()
    (only / "b.bin").write_bytes(b"\x00\x01")
    with pytest.raises(BigModelError, match="no text files"):
        prepare_text(str(only), tmp_path / "out2")
