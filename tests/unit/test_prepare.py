from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from bigmodel.data import load_manifest, prepare
from bigmodel.errors import BigModelError
from tests.conftest import open_files


def _read_split(root: Path, files: list[str]) -> pa.Table:
    return pa.concat_tables([pq.read_table(root / f) for f in files])


def test_prepare_parquet_file(prepared: Path, small_parquet: Path):
    m = load_manifest(prepared)
    src = pq.read_table(small_parquet)
    assert m.task == "binary" and m.label == "target" and m.label_values == ["no", "yes"]
    assert m.features == [f"x{j}" for j in range(5)]
    assert m.splits["train"].rows + m.splits["val"].rows == 600
    assert 0.1 < m.splits["val"].rows / 600 < 0.3
    train = _read_split(prepared, m.splits["train"].files)
    x = np.stack([train.column(f).to_numpy() for f in m.features], axis=1).astype(np.float64)
    np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.std, x.std(axis=0), rtol=1e-5)
    # codes map back to the original labels, row for row (as a multiset)
    codes = train.column("target").to_numpy()
    assert set(codes.tolist()) == {0, 1}
    assert (src.column("target").to_numpy() == "yes").sum() == (
        (codes == 1).sum()
        + (_read_split(prepared, m.splits["val"].files).column("target").to_numpy() == 1).sum()
    )
    assert len(m.content_hash) == 64 and set(m.file_hashes) == set(
        m.splits["train"].files + m.splits["val"].files
    )


def test_split_is_deterministic_and_seeded(tmp_path: Path, small_parquet: Path):
    a = prepare(str(small_parquet), tmp_path / "a", label="target", seed=1)
    b = prepare(str(small_parquet), tmp_path / "b", label="target", seed=1)
    c = prepare(str(small_parquet), tmp_path / "c", label="target", seed=2)
    assert a.content_hash == b.content_hash != c.content_hash


def test_csv_folder_multiclass_and_regression(tmp_path: Path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "csvs"
    folder.mkdir()
    for i in range(3):
        x = rng.standard_normal((100, 3))
        t = pa.table(
            {
                "a": x[:, 0],
                "b": x[:, 1],
                "c": rng.integers(0, 5, 100),
                "y": rng.integers(0, 3, 100) * 10,
                "r": x[:, 2] * 2.5,
            }
        )
        pcsv.write_csv(t, folder / f"part{i}.csv")
    m = prepare(str(folder), tmp_path / "mc", label="y")
    assert m.task == "multiclass" and m.label_values == [0, 10, 20]
    assert m.features == ["a", "b", "c", "r"]
    assert sum(s.rows for s in m.splits.values()) == 300
    r = prepare(f"file://{folder}", tmp_path / "reg", label="r")  # an fsspec URL
    assert r.task == "regression" and r.target_std > 1.0


def test_destination_is_never_overwritten(prepared: Path, small_parquet: Path):
    before = (prepared / "manifest.json").read_bytes()
    with pytest.raises(BigModelError, match="already exists"):
        prepare(str(small_parquet), prepared, label="target")
    assert (prepared / "manifest.json").read_bytes() == before


@pytest.mark.parametrize(
    ("table", "label", "message"),
    [
        (
            {"a": [1.0, 2.0], "y": [0, 1]},
            "target",
            r"label column 'target' not found in .* \(columns: a, y\)",
        ),
        ({"a": ["x", "y"] * 5, "y": [0, 1] * 5}, "y", "feature column 'a' is not numeric"),
        ({"a": [1.0, float("nan")] * 5, "y": [0, 1] * 5}, "y", r"'a' has a NaN or infinite value \(row 1\)"),
        ({"a": [1.0, float("inf")] * 5, "y": [0, 1] * 5}, "y", "'a' has a NaN or infinite value"),
        ({"a": [1.0, None] * 5, "y": [0, 1] * 5}, "y", "'a' has a missing value"),
        ({"a": [1.0] * 10, "y": [1] * 10}, "y", "single value"),
        ({"a": pa.array([], pa.float64()), "y": pa.array([], pa.int64())}, "y", "empty"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, table, label, message):
    src = tmp_path / "bad.parquet"
    pq.write_table(pa.table(table), src)
    with pytest.raises(BigModelError, match=message):
        prepare(str(src), tmp_path / "out", label=label)
    assert not (tmp_path / "out").exists()  # nothing half-written left behind


def test_missing_source(tmp_path: Path):
    with pytest.raises(BigModelError, match="source not found"):
        prepare(str(tmp_path / "nope.csv"), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BigModelError, match=r"no \.csv or \.parquet files"):
        prepare(str(tmp_path / "empty"), tmp_path / "out")


def _sorted_source(tmp_path: Path, rows: int = 4000) -> Path:
    """Rows sorted by label, as a big source often is (by class, by time); ``id`` is the source row."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(rows)
    y = np.sort(rng.integers(0, 2, rows))
    path = tmp_path / "sorted.parquet"
    pq.write_table(pa.table({"id": np.arange(rows, dtype=np.float64), "x": x, "y": y}), path)
    return path


def _split_ids(root: Path, split: str) -> np.ndarray:
    m = load_manifest(root)
    return _read_split(root, m.splits[split].files).column("id").to_numpy().astype(np.int64)


def test_rows_are_shuffled_once_by_seed_in_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import bigmodel.data.shuffle as shuffle

    monkeypatch.setattr(shuffle, "BUCKET_BYTES", 8 << 10)  # ~4 buckets per split: the two-pass path
    src = str(_sorted_source(tmp_path))
    a = prepare(src, tmp_path / "a", label="y", seed=3)
    b = prepare(src, tmp_path / "b", label="y", seed=3)
    c = prepare(src, tmp_path / "c", label="y", seed=4)
    kept = prepare(src, tmp_path / "kept", label="y", seed=3, shuffle=False)
    assert a.shuffled and not kept.shuffled
    assert a.content_hash == b.content_hash != c.content_hash
    for split in ("train", "val"):
        ids, source_order = _split_ids(tmp_path / "a", split), _split_ids(tmp_path / "kept", split)
        assert (np.diff(source_order) > 0).all()  # shuffle=False: the source's order
        assert sorted(ids.tolist()) == source_order.tolist()  # the same rows in each split
        # No trace of the source's order: a row's place does not follow its source position.
        assert abs(np.corrcoef(ids, np.arange(len(ids)))[0, 1]) < 0.1
    assert not list(tmp_path.glob("**/.shuffle"))  # the bucket files are gone


def test_a_sorted_source_trains_on_mixed_batches(tmp_path: Path, monkeypatch):
    """The reader shuffles within windows only; shuffling at prepare is what mixes a sorted source."""
    from bigmodel.data import ParquetStream, iterate, shards

    monkeypatch.setattr(shards, "ROW_GROUP_ROWS", 256)  # windows of whole row groups: 256 rows

    src = str(_sorted_source(tmp_path))

    def single_class_batches(root: Path) -> float:
        stream = ParquetStream(root, load_manifest(root), "train", batch_size=64, window_rows=256)
        batches = [b.y for b in iterate(stream, 0)]
        return sum(len(set(y.tolist())) == 1 for y in batches) / len(batches)

    prepare(src, tmp_path / "shuffled", label="y")
    prepare(src, tmp_path / "kept", label="y", shuffle=False)
    assert single_class_batches(tmp_path / "shuffled") == 0
    assert single_class_batches(tmp_path / "kept") > 0.5


def test_bad_input_after_buckets_were_written_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import bigmodel.data.shuffle as shuffle

    monkeypatch.setattr(shuffle, "BUCKET_BYTES", 256)  # several buckets per split, all open
    folder = tmp_path / "src"
    folder.mkdir()
    pq.write_table(pa.table({"a": np.arange(100.0), "y": [0, 1] * 50}), folder / "0.parquet")
    pq.write_table(pa.table({"a": [1.0, float("nan")] * 5, "y": [0, 1] * 5}), folder / "1.parquet")
    try:
        prepare(str(folder), tmp_path / "out", label="y")
        pytest.fail("a NaN feature was accepted")
    except BigModelError as err:  # checked while the error (and the frames it holds) is alive
        assert "1.parquet: feature column 'a' has a NaN" in str(err)
        assert not [f for f in open_files() if ".arrows" in f]  # closed now, not at garbage collection
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no half-written folder, no buckets


def test_reading_a_parquet_source_holds_one_batch_not_the_file(tmp_path: Path):
    from bigmodel.data.source import batches, open_source

    rng = np.random.default_rng(0)
    t = pa.table({f"c{j}": rng.standard_normal(20 * 65536) for j in range(4)})  # 20 row groups of 2 MB
    pq.write_table(t, tmp_path / "big.parquet", row_group_size=65536)
    fs, path = open_source(str(tmp_path / "big.parquet"))
    base, peak = pa.total_allocated_bytes(), 0
    for batch in batches(fs, path):
        peak = max(peak, pa.total_allocated_bytes() - base)
        del batch
    assert peak < 16 << 20  # not the 40 MB file, as pyarrow's pre-buffering held it


def test_reading_a_csv_source_holds_one_block_not_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from bigmodel.data import source

    rng = np.random.default_rng(0)
    t = pa.table({f"c{j}": rng.standard_normal(300_000).round(6) for j in range(8)})
    pcsv.write_csv(t, tmp_path / "big.csv")  # ~26 MB
    monkeypatch.setattr(source, "_CSV_BLOCK", 1 << 20)
    fs, path = source.open_source(str(tmp_path / "big.csv"))
    base, peak = pa.total_allocated_bytes(), 0
    for batch in source.batches(fs, path):
        peak = max(peak, pa.total_allocated_bytes() - base)
        del batch
    assert peak < 8 << 20  # Arrow's streaming reader held the whole file (read ahead of us)
    got = pa.Table.from_batches(list(source.batches(fs, path)))
    assert got.equals(pcsv.read_csv(tmp_path / "big.csv"))
    # a line longer than a block, no newline at the end, CRLF line ends: the same rows as Arrow reads
    monkeypatch.setattr(source, "_CSV_BLOCK", 64)
    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"a,text\r\n1," + b"x" * 300 + b'\r\n2,\r\n3,"quoted, comma"\r\n4,end')
    rows = pa.Table.from_batches(list(source.batches(fs, str(odd))))
    bad = tmp_path / "bad.csv"  # a bad cell after the first block: named by its row in the file
    bad.write_bytes(b"a\n" + b"1\n" * 100 + b"\n" + b"x\n")
    with pytest.raises(BigModelError, match="Row #102: CSV conversion error to int64: invalid value 'x'"):
        list(source.batches(fs, str(bad)))
    assert rows.to_pylist() == [
        {"a": 1, "text": "x" * 300},
        {"a": 2, "text": None},
        {"a": 3, "text": "quoted, comma"},
        {"a": 4, "text": "end"},
    ]


def test_a_full_disk_is_one_line_and_leaves_nothing(
    tmp_path: Path, small_parquet: Path, monkeypatch: pytest.MonkeyPatch
):
    from bigmodel.data.shuffle import BucketShuffle

    def full(self: BucketShuffle, batch: pa.RecordBatch, keys: object = None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(BucketShuffle, "add", full)
    with pytest.raises(BigModelError, match=r"cannot write .*out: \[Errno 28\] No space left on device"):
        prepare(str(small_parquet), tmp_path / "out", label="target")
    assert not list(tmp_path.glob("*out*"))


def _folder(root: Path, files: dict[str, pa.Table]) -> Path:
    for name, table in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / name)
    return root


def test_a_folder_skips_hidden_and_underscore_paths_and_prepared_datasets(tmp_path: Path):
    rows = pa.table({"a": np.arange(100.0), "y": [0, 1] * 50})
    junk = pa.table({"b": [1.0]})  # would fail the column check if read
    src = _folder(
        tmp_path / "src",
        {
            "part-0.parquet": rows,
            "_temporary/0.parquet": junk,
            ".x/1.parquet": junk,
            "._part-0.parquet": junk,
        },
    )
    first = prepare(str(src), src / "prepared", label="y")  # a dataset inside its own source
    again = prepare(str(src), tmp_path / "again", label="y")
    assert first.splits["train"].rows + first.splits["val"].rows == 100
    assert again.content_hash == first.content_hash  # its shards were not read back in
    with pytest.raises(BigModelError, match="is a prepared dataset already"):
        prepare(str(src / "prepared"), tmp_path / "x", label="y")


def test_labels_may_be_categorical_and_files_may_start_empty(tmp_path: Path):
    y = pa.array(["b", "a", "c", "a"] * 25).dictionary_encode()
    src = _folder(
        tmp_path / "src",
        {
            "0.parquet": pa.table({"x": pa.array([], pa.float64()), "y": pa.array([], y.type)}),
            "1.parquet": pa.table({"x": np.arange(100.0), "y": y}),
        },
    )
    m = prepare(str(src), tmp_path / "out", label="y")
    assert m.task == "multiclass" and m.label_values == ["a", "b", "c"]


def test_a_uint64_label_beyond_int64_is_a_class_like_any_other(tmp_path: Path):
    big = 2**64 - 1
    src = tmp_path / "u.parquet"
    pq.write_table(pa.table({"x": np.arange(20.0), "y": pa.array([0, big] * 10, pa.uint64())}), src)
    m = prepare(str(src), tmp_path / "out", label="y")
    assert m.task == "binary" and m.label_values == [0, big]
    codes = pq.read_table(tmp_path / "out" / m.split("train").files[0]).column("y").to_pylist()
    assert set(codes) == {0, 1}  # stored as class codes


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        (
            {
                "0.parquet": pa.table({"x": [1.0, 2.0], "y": [0, 1]}),
                "1.parquet": pa.table({"x": [1.0], "y": ["c"]}),
            },
            {},
            r"1\.parquet: label column 'y' is string, but int64 in .*0\.parquet",
        ),
        (
            {"0.parquet": pa.table({"x": [1.0, 2.0, 3.0], "y": [0.0, 1.0, float("nan")]})},
            {"task": "multiclass"},
            "'y' has a NaN value",
        ),
        (
            {"0.parquet": pa.table({"x": [1.0, 2.0], "y": [0, 1]})},
            {"seed": -1},
            "--seed must be >= 0, got -1",
        ),
        (
            {
                "0.parquet": pa.table({"x": np.arange(50.0), "y": [0, 1] * 25}),
                "1.parquet": pa.table({"x": [1.0] * 10 + [float("nan")], "y": [0] * 11}),
            },
            {},
            r"1\.parquet: feature column 'x' has a NaN or infinite value \(row 10\)",  # its own row
        ),
    ],
)
def test_more_bad_input_is_one_clear_error(tmp_path: Path, files, args, message):
    src = _folder(tmp_path / "src", files)
    with pytest.raises(BigModelError, match=message):
        prepare(str(src), tmp_path / "out", label="y", **args)
    assert not (tmp_path / "out").exists()


def test_a_column_twice_is_named(tmp_path: Path):
    (tmp_path / "dup.csv").write_text("a,a,y\n1,2,0\n3,4,1\n")
    with pytest.raises(BigModelError, match=r"dup\.csv: column 'a' appears 2 times"):
        prepare(str(tmp_path / "dup.csv"), tmp_path / "out", label="y")


def test_every_writer_refuses_a_negative_seed_in_one_line(tmp_path: Path):
    from bigmodel.data import generate_synthetic, generate_text

    for make in (
        lambda: generate_synthetic(tmp_path / "s", rows=10, features=2, seed=-1),
        lambda: generate_text(tmp_path / "t", n_bytes=1000, context=16, seed=-1),
    ):
        with pytest.raises(BigModelError, match="--seed must be >= 0, got -1"):
            make()
    assert not list(tmp_path.iterdir())


def test_an_integer_quantity_is_regression_and_integer_classes_stay_classes(tmp_path: Path):
    """diabetes.csv's `progression` (an integer score, 214 values in 442 rows) once became 214 classes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((442, 3))
    score = (150 + 60 * x[:, 0] + 20 * rng.standard_normal(442)).round().astype(np.int64)
    assert len(np.unique(score)) > 100
    src = tmp_path / "diabetes.csv"
    pcsv.write_csv(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "progression": score}), src)
    assert prepare(str(src), tmp_path / "d", label="progression").task == "regression"
    assert prepare(str(src), tmp_path / "dm", label="progression", task="multiclass").task == "multiclass"
    digits = rng.integers(0, 10, 1797)  # ten classes in many rows: still classes
    pq.write_table(pa.table({"a": rng.standard_normal(1797), "y": digits}), tmp_path / "g.parquet")
    assert prepare(str(tmp_path / "g.parquet"), tmp_path / "g", label="y").task == "multiclass"
