from pathlib import Path

import numpy as np
import pytest
import torch

from bigmodel import TrainConfig, train
from bigmodel.data import ParquetStream, generate_text, iterate, load_manifest, prepare
from bigmodel.errors import BigModelError


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("t") / "text"
    generate_text(root, n_bytes=50_000, context=16, seed=0)
    return root


def test_rows_are_overlapping_byte_windows(tmp_path: Path):
    src = tmp_path / "a.txt"
    data = bytes(range(256)) * 3
    src.write_bytes(data)
    m = prepare(str(src), tmp_path / "ds", task="lm", context=10, val_fraction=0.5, seed=0)
    assert m.task == "lm" and m.context == 10 and m.vocab == 256 and m.num_outputs == 256
    rows = []
    for split in ("train", "val"):
        s = ParquetStream(tmp_path / "ds", m, split, batch_size=8, shuffle=False)
        rows += [torch.cat([b.x, b.y[:, -1:]], dim=1) for b in iterate(s, 0)]
    got = sorted(bytes(r.to(torch.uint8).tolist()) for r in torch.cat(rows))
    # every row is 11 consecutive bytes starting at a multiple of 10 (the file plus a final newline)
    stream = data + b"\n"
    want = sorted(stream[i : i + 11] for i in range(0, len(stream) - 10, 10))
    assert got == want


def test_a_corpus_is_shuffled_once_at_prepare(tmp_path: Path):
    src = tmp_path / "corpus.txt"
    src.write_bytes(b"".join(b"%09d\n" % i for i in range(3000)))  # rows of 10 bytes, each one unique

    def rows(shuffle: bool) -> list[bytes]:
        dst = tmp_path / f"ds-{shuffle}"
        m = prepare(str(src), dst, task="lm", context=10, seed=0, shuffle=shuffle)
        assert m.shuffled is shuffle
        s = ParquetStream(dst, m, "train", batch_size=64, shuffle=False)  # as stored
        return [bytes(r.to(torch.uint8).tolist()) for b in iterate(s, 0) for r in b.x]

    shuffled, kept = rows(True), rows(False)
    assert kept == sorted(kept) and sorted(shuffled) == kept and shuffled != kept


def test_batches_are_inputs_and_next_byte_targets(text: Path):
    m = load_manifest(text)
    b = next(iterate(ParquetStream(text, m, "train", batch_size=8, seed=1), 0))
    assert b.x.shape == b.y.shape == (8, 16) and b.x.dtype == b.y.dtype == torch.int64
    assert torch.equal(b.x[:, 1:], b.y[:, :-1])


def test_ranks_split_token_batches_like_tabular_ones(text: Path):
    m = load_manifest(text)
    one = [b.x for b in iterate(ParquetStream(text, m, "train", batch_size=6, seed=2), 0)]
    two = [
        [b.x for b in iterate(ParquetStream(text, m, "train", batch_size=6, seed=2, rank=r, world=2), 0)]
        for r in range(2)
    ]
    assert all(torch.equal(torch.cat([a, b]), ref) for a, b, ref in zip(*two, one, strict=True))


def test_generated_text_is_seeded_and_learnable_by_a_tiny_transformer(text: Path, tmp_path: Path):
    again = tmp_path / "again"
    assert (
        generate_text(again, n_bytes=50_000, context=16, seed=0).content_hash
        == load_manifest(text).content_hash
    )
    cfg = {
        "data": {"dataset": str(text)},
        "model": {"name": "transformer", "size": "tiny"},
        "optim": {"lr": 3e-3},
        "batch_size": 32,
        "epochs": 1,
        "max_steps": 40,
        "eval_rows": 256,
        "run_dir": str(tmp_path / "run"),
        "progress": False,
    }
    out = train(TrainConfig.model_validate(cfg))
    assert out["metrics"]["loss"] < np.log(256) - 2.0  # well below a uniform guess over bytes
    assert out["metrics"]["bits_per_byte"] == pytest.approx(out["metrics"]["loss"] / np.log(2))


def test_models_and_datasets_must_fit(text: Path, tmp_path: Path):
    with pytest.raises(BigModelError, match="train it with --model transformer"):
        train(TrainConfig.model_validate({"data": {"dataset": str(text)}, "run_dir": str(tmp_path / "a")}))
    with pytest.raises(BigModelError, match="needs a text dataset"):
        train(TrainConfig.model_validate({"model": {"name": "transformer"}, "run_dir": str(tmp_path / "b")}))
    with pytest.raises(BigModelError, match=r"empty: no rows \(text needs more than --context 16 bytes"):
        (tmp_path / "short.txt").write_bytes(b"abc")
        prepare(str(tmp_path / "short.txt"), tmp_path / "short", task="lm", context=16)
    with pytest.raises(BigModelError, match="is a prepared dataset already; train on it directly"):
        prepare(str(text), tmp_path / "again", task="lm")
    assert not (tmp_path / "again").exists()
