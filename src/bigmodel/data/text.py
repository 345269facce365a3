"""Byte-level text datasets for language modelling, written in bounded memory.

Text is read as bytes (the vocabulary is the 256 byte values: no tokenizer to ship), laid end to
end, and cut into rows of ``context + 1`` bytes with a stride of ``context``: a model reads the
first ``context`` bytes of a row and predicts the last ``context``, so every byte after the first is
a target exactly once. Rows then go through the same ``ShardWriter`` as tabular data (seeded
train/val split, Parquet shards, manifest), so the stream, its world-size-independent batches,
and resuming work unchanged.

Sources: any text files (``bigmodel data prepare SRC DST --task lm``), a seeded generator
(``bigmodel data generate text``), and the built-in ``pysource``: the Python standard library's
own source files, which every Python installation ships.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

import fsspec
import numpy as np

from bigmodel.data.manifest import MANIFEST, Manifest
from bigmodel.data.shards import TOKENS, ShardWriter, check_seed
from bigmodel.data.source import open_source
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir

LM_ROW_GROUP_BYTES = 2 << 20  # smaller row groups than tabular data: a finer-grained shuffle
_CHUNK_ROWS = 8192


def write_text_dataset(
    dst: str | Path,
    chunks: Iterable[bytes],
    *,
    name: str,
    source: str,
    context: int = 256,
    seed: int = 0,
    val_fraction: float = 0.1,
    shuffle_bytes: int | None = None,
) -> Manifest:
    """Cut a stream of byte chunks into rows and write a prepared ``lm`` dataset at ``dst``; with
    ``shuffle_bytes`` (about the size of the text) the rows are shuffled once, by ``seed``."""
    check_seed(seed)
    check_context(context)
    dst = Path(dst)
    if dst.exists():
        raise BigModelError(
            f"destination already exists: {dst} (choose a new folder; nothing was overwritten)"
        )
    with (
        atomic_dir(dst) as tmp,
        ShardWriter(
            tmp,
            name=name,
            source=source,
            task="lm",
            features=[TOKENS],
            label=TOKENS,
            label_values=None,
            seed=seed,
            val_fraction=val_fraction,
            row_group_rows=lm_row_group_rows(context),
            context=context,
            shuffle_bytes=shuffle_bytes,
        ) as writer,
    ):
        for rows in _rows(chunks, context):
            writer.write(rows, None)
        manifest = writer.close()  # refuses a source too short for one row
    return manifest


def check_context(context: int) -> None:
    if context < 2:
        raise BigModelError(f"--context must be at least 2, got {context}")


def _rows(chunks: Iterable[bytes], context: int) -> Iterator[np.ndarray]:
    """(n, context + 1) uint8 rows with stride ``context``; at most ~_CHUNK_ROWS rows in memory."""
    buf = b""
    want = _CHUNK_ROWS * context + 1
    for chunk in chunks:
        buf += chunk
        while len(buf) >= want:
            yield cut_rows(buf[:want], context)
            buf = buf[want - 1 :]  # the last byte of a row is the first of the next
    if len(buf) > context:
        yield cut_rows(buf, context)


def cut_rows(data: bytes, context: int) -> np.ndarray:
    a = np.frombuffer(data, dtype=np.uint8)
    n = (len(a) - 1) // context
    starts = np.arange(n)[:, None] * context  # (n, 1)
    return a[starts + np.arange(context + 1)]  # (n, context + 1)


def _read_files(paths: list[str], fs: fsspec.AbstractFileSystem) -> Iterator[bytes]:
    for path in paths:
        try:
            with fs.open(path, "rb") as f:
                while block := f.read(1 << 20):
                    yield block
        except OSError as err:
            raise BigModelError(f"cannot read {path}: {err}") from None
        yield b"\n"


def _text_files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """The text files under ``root``, sorted. Skipped, as for tables (and as pyarrow, Spark and Hive
    skip them): paths with a part starting with "." or "_" (.git, _SUCCESS, _temporary); and files
    that are not text: a NUL byte in the first 8 KiB, or a gzip/zip/bzip2/xz/zstd header (a model
    trained on a code folder must not learn .git objects or archives)."""
    root = root.rstrip("/")
    out = []
    for f in sorted(fs.find(root)):
        if any(p.startswith((".", "_")) for p in f[len(root) + 1 :].split("/")):
            continue
        with fs.open(f, "rb") as fh:
            head = fh.read(8192)
        if b"\x00" in head or head.startswith(_ARCHIVES):
            continue
        out.append(f)
    return out


_ARCHIVES = (b"\x1f\x8b", b"PK\x03\x04", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")


def text_source(src: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The text files ``src`` (a file or a folder, local or an fsspec URL) names, in the order they
    are laid end to end (each followed by a newline) and their filesystem."""
    fs, path = open_source(src)
    if fs.isdir(path) and fs.exists(f"{path.rstrip('/')}/{MANIFEST}"):  # its Parquet would be read as bytes
        raise BigModelError(f"{src} is a prepared dataset already; train on it directly (--dataset {src})")
    paths = _text_files(fs, path) if fs.isdir(path) else [path]
    if not paths:
        raise BigModelError(
            f"no text files in {src} (skipped: hidden or _-prefixed paths, binary and compressed files)"
        )
    return fs, paths


def lm_row_group_rows(context: int) -> int:
    """Rows per Parquet row group of an ``lm`` dataset (both engines write the same files)."""
    return max(256, LM_ROW_GROUP_BYTES // (context + 1))


def prepare_text(
    src: str,
    dst: str | Path,
    *,
    context: int = 256,
    val_fraction: float = 0.1,
    seed: int = 0,
    name: str | None = None,
    shuffle: bool = True,
) -> Manifest:
    """A text file or a folder of them (local path or fsspec URL; every file, in sorted order)
    -> a prepared byte-level ``lm`` dataset at ``dst``. Its rows are shuffled once, by ``seed``
    (``shuffle=False``: in the text's order), so that batches mix the files of a corpus."""
    fs, paths = text_source(src)
    return write_text_dataset(
        dst,
        _read_files(paths, fs),
        name=name or Path(str(src).rstrip("/")).name,
        source=str(src),
        context=context,
        seed=seed,
        val_fraction=val_fraction,
        shuffle_bytes=sum(fs.size(p) or 0 for p in paths) if shuffle else None,
    )


def python_source_files() -> list[Path]:
    """The standard library's .py files (tests and installed packages left out), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "site-packages", "dist-packages", "idlelib", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))


def prepare_python_source(
    dst: str | Path, *, context: int = 256, seed: int = 0, val_fraction: float = 0.1
) -> Manifest:
    """The built-in ``pysource`` dataset: Python's own standard library source (~13 MB), byte level."""
    files = python_source_files()
    if not files:
        raise BigModelError(f"no Python source files found under {sysconfig.get_paths()['stdlib']}")
    fs = fsspec.filesystem("file")
    return write_text_dataset(
        dst,
        _read_files([str(f) for f in files], fs),
        name="pysource",
        source=f"python-stdlib:{sysconfig.get_paths()['stdlib']}",
        context=context,
        seed=seed,
        val_fraction=val_fraction,
    )


_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "to",
    "sa",
    "vel",
    "dor",
    "in",
    "ath",
    "qu",
    "es",
    "po",
    "lin",
    "ar",
    "um",
]


def generated_text(n_bytes: int, seed: int = 0, words: int = 400) -> Iterator[bytes]:
    """Seeded English-like text with learnable structure: each of ``words`` invented words is
    followed by one of 4 successors (with probabilities .55/.25/.15/.05); sentences end at random."""
    rng = np.random.default_rng(seed)
    vocab: list[str] = []
    seen: set[str] = set()
    while len(vocab) < words:
        w = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 4))))
        if w not in seen:
            seen.add(w)
            vocab.append(w)
    succ = rng.integers(0, words, size=(words, 4))  # (V, 4) each word's successors
    cum = np.cumsum([0.55, 0.25, 0.15, 0.05])
    chains, steps = 64, 256  # generated side by side: vectorised over chains
    state = rng.integers(0, words, size=chains)
    made = 0
    while made < n_bytes:
        ids = np.empty((steps, chains), dtype=np.int64)
        stops = rng.random((steps, chains)) < 0.08
        for t in range(steps):
            state = succ[state, np.searchsorted(cum, rng.random(chains))]
            ids[t] = state
        parts = []
        for c in range(chains):
            sentence = [
                vocab[i] + (".\n" if stop else " ") for i, stop in zip(ids[:, c], stops[:, c], strict=True)
            ]
            parts.append("".join(sentence))
        block = "".join(parts).encode()[: n_bytes - made]
        made += len(block)
        yield block


def generate_text(
    dst: str | Path, *, n_bytes: int, context: int = 128, seed: int = 0, val_fraction: float = 0.1
) -> Manifest:
    """Write a seeded generated-text ``lm`` dataset of ``n_bytes`` bytes to ``dst``."""
    if n_bytes <= context:
        raise BigModelError(f"--bytes must be larger than --context ({context}), got {n_bytes}")
    return write_text_dataset(
        dst,
        generated_text(n_bytes, seed),
        name=Path(dst).name,
        source=f"generated-text:bytes={n_bytes}:seed={seed}",
        context=context,
        seed=seed,
        val_fraction=val_fraction,
    )
