"""``data prepare --engine spark`` on ``local[2]``: the same shards, content hash and statistics as
the local engine, and bad input as one line with nothing at DST. One Spark session for the module
(JVM start-up is the slow part)."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from bigmodel.data import load_manifest, prepare, shards
from bigmodel.errors import BigModelError
from tests.conftest import run_cli

pytest.importorskip("pyspark")
if (
    not shutil.which("java")
    and not Path(os.environ.get("JAVA_HOME", "/nonexistent"), "bin", "java").is_file()
):
    pytest.skip("no Java 17+: --engine spark needs it (see make install)", allow_module_level=True)


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from bigmodel.data.spark_engine import session

    s = session("local[2]", {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4"})
    yield s
    s.stop()


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several shard files and row groups per split, as a big dataset has.
    monkeypatch.setattr(shards, "ROW_GROUP_ROWS", 128)
    monkeypatch.setattr(shards, "SHARD_ROWS", 512)


def _csv_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(3):
        x = rng.normal(size=(700, 4)).round(4)
        t = pa.table({**{f"f{j}": x[:, j] for j in range(4)}, "label": rng.integers(0, 3, 700)})
        pcsv.write_csv(t, root / f"part{i}.csv")
    return root


def _same(a: Path, b: Path) -> None:
    ma, mb = load_manifest(a), load_manifest(b)
    assert ma.content_hash == mb.content_hash and ma.file_hashes == mb.file_hashes
    assert ma.splits == mb.splits and ma.label_values == mb.label_values and ma.task == mb.task
    np.testing.assert_allclose(mb.mean, ma.mean, rtol=1e-9)
    np.testing.assert_allclose(mb.std, ma.std, rtol=1e-9)
    np.testing.assert_allclose(mb.target_mean, ma.target_mean, rtol=1e-9)
    assert ma.model_dump(exclude={"mean", "std", "target_mean", "target_std"}) == mb.model_dump(
        exclude={"mean", "std", "target_mean", "target_std"}
    )


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_csv_folder_gives_the_local_engines_shards(spark, small_shards, tmp_path: Path, shuffle: bool):
    src = _csv_folder(tmp_path)
    a = prepare(str(src), tmp_path / "local", seed=3, shuffle=shuffle)
    prepare(str(src), tmp_path / "spark", seed=3, shuffle=shuffle, engine="spark")
    assert len(a.splits["train"].files) >= 3  # several shards: the rank -> shard placement is tested
    _same(tmp_path / "local", tmp_path / "spark")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_parquet_file_and_a_regression_target(spark, small_parquet: Path, tmp_path: Path):
    prepare(str(small_parquet), tmp_path / "local", label="target", seed=1)
    prepare(str(small_parquet), tmp_path / "spark", label="target", seed=1, engine="spark")
    _same(tmp_path / "local", tmp_path / "spark")
    t = pq.read_table(small_parquet)
    y = pa.array(np.random.default_rng(0).normal(size=t.num_rows))
    reg = tmp_path / "reg.parquet"
    pq.write_table(t.drop_columns(["target"]).append_column("y", y), reg)
    prepare(str(reg), tmp_path / "rl", label="y", seed=2)
    prepare(str(reg), tmp_path / "rs", label="y", seed=2, engine="spark")
    _same(tmp_path / "rl", tmp_path / "rs")


def test_a_spark_dataframe_is_prepared_in_place(spark, small_parquet: Path, tmp_path: Path):
    df = spark.read.parquet(str(small_parquet))  # type: ignore[attr-defined]
    m = prepare(df, tmp_path / "df", label="target", seed=0)
    local = prepare(str(small_parquet), tmp_path / "local", label="target", seed=0)
    assert m.content_hash == local.content_hash and m.source == "spark-dataframe"


def test_bad_input_is_one_line_and_leaves_nothing(spark, small_parquet: Path, tmp_path: Path):
    with pytest.raises(BigModelError, match="label column 'nope' not found"):
        prepare(str(small_parquet), tmp_path / "out", label="nope", engine="spark")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(pa.table({"a": [1.0, 2.0], "label": [0, 1]}), mixed / "a.parquet")
    pq.write_table(pa.table({"b": [1.0, 2.0], "label": [0, 1]}), mixed / "b.parquet")
    with pytest.raises(BigModelError, match=r"b.parquet: columns \['b', 'label'\] differ"):
        prepare(str(mixed), tmp_path / "out", engine="spark")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _text_folder(root: Path) -> Path:
    """Files whose rows cross file boundaries, a file shorter than a row, an empty one, a subfolder;
    a hidden file and a binary one, which both engines skip."""
    rng = np.random.default_rng(1)
    words = np.array(["alpha", "beta", "gamma", "delta", "\u00e9t\u00e9", "x"])
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(" ".join(rng.choice(words, 9000)) + "\n")
    (root / "b.txt").write_text("tiny")
    (root / "c.txt").write_text("")
    (root / "sub" / "d.md").write_text("".join(f"line {i}\n" for i in range(3000)))
    (root / ".hidden").write_text("never read")
    (root / "blob.bin").write_bytes(b"\x00\x01" * 100)
    return root


@pytest.mark.parametrize("shuffle", [True, False])
def test_text_gives_the_local_engines_lm_shards(spark, tmp_path: Path, monkeypatch, shuffle: bool):
    from bigmodel.data import text

    monkeypatch.setattr(text, "LM_ROW_GROUP_BYTES", 1)  # row groups of 256 rows
    monkeypatch.setattr(shards, "SHARD_ROWS", 1000)  # files of 4 row groups
    src = _text_folder(tmp_path / "src")
    a = prepare(str(src), tmp_path / "local", task="lm", context=12, seed=4, shuffle=shuffle)
    b = prepare(str(src), tmp_path / "spark", task="lm", context=12, seed=4, shuffle=shuffle, engine="spark")
    assert len(a.splits["train"].files) >= 3 and a.context == b.context == 12
    _same(tmp_path / "local", tmp_path / "spark")


def test_bad_text_input_is_one_line_and_leaves_nothing(spark, tmp_path: Path):
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(BigModelError, match=r"empty: no rows \(text needs more than --context 16 bytes"):
        prepare(str(tmp_path / "short.txt"), tmp_path / "out", task="lm", context=16, engine="spark")
    with pytest.raises(BigModelError, match="--context must be at least 2"):
        prepare(str(tmp_path / "short.txt"), tmp_path / "out", task="lm", context=1, engine="spark")
    with pytest.raises(BigModelError, match="no text files in"):
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "x").write_bytes(b"\x00")
        prepare(str(tmp_path / "bin"), tmp_path / "out", task="lm", engine="spark")
    (tmp_path / "rep.txt").write_text("\nab" * 2000)  # every row (4 bytes) is "\nab\n": one split gets all
    for engine in ("local", "spark"):
        with pytest.raises(BigModelError, match=r"has no (train|val) rows .* too few or too alike"):
            prepare(str(tmp_path / "rep.txt"), tmp_path / "out", task="lm", context=3, engine=engine)
    df = spark.createDataFrame([("some text",)], "text string")  # type: ignore[attr-defined]
    with pytest.raises(BigModelError, match="--task lm on Spark reads text files: pass their path"):
        prepare(df, tmp_path / "out", task="lm")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_a_spark_that_cannot_start_is_one_line(small_parquet: Path, tmp_path: Path):
    """No Java, an old one, a master that does not answer or parse, a bad setting: one line naming
    the reason, exit 2, nothing at DST (the JVM's own page of stack trace is held back)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    fake = tmp_path / "jdk" / "bin"
    fake.mkdir(parents=True)
    (fake / "java").write_text(  # a Java too old for Spark, as it answers
        '#!/bin/sh\necho \'Exception in thread "main" java.lang.UnsupportedClassVersionError: '
        "org/apache/spark/launcher/Main has been compiled by a more recent version' >&2\n"
        "echo '\tat java.lang.ClassLoader.defineClass1(Native Method)' >&2\nexit 1\n"
    )
    (fake / "java").chmod(0o755)
    cases = [
        (["--master", "spark://127.0.0.1:1"], {}, "cannot reach Spark master spark://127.0.0.1:1"),
        ([], {"JAVA_HOME": str(tmp_path / "nowhere"), "PATH": str(bare)}, "needs Java 17+"),
        (["--master", "nonsense"], {}, "cannot start Spark on nonsense: Master must either be yarn or"),
        (["--spark-conf", "spark.driver.memory=lots"], {}, "cannot start Spark on local[2]"),
        ([], {"JAVA_HOME": str(tmp_path / "jdk")}, "has been compiled by a more recent version"),
    ]
    out = tmp_path / "out"
    for flags, env, says in cases:
        args = [str(small_parquet), str(out), "--label", "target", "--engine", "spark", *flags]
        r = run_cli("data", "prepare", *args, env=env, timeout=120)
        assert r.returncode == 2 and says in r.stderr, (flags, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (flags, r.stderr)
        assert not out.exists() and not os.listdir(bare)


def test_blank_and_mixed_labels_and_odd_names_mean_the_same_on_both_engines(spark, tmp_path: Path):
    src = tmp_path / "mixed.csv"
    # column names Spark's SQL would parse: a dot (a struct field), a backtick
    src.write_text(
        "a.b,c `d,label\n" + "".join(f"{i},{i % 7},{'x' if i % 3 else i % 2}\n" for i in range(300))
    )
    prepare(str(src), tmp_path / "local", seed=5)
    prepare(str(src), tmp_path / "spark", seed=5, engine="spark")
    _same(tmp_path / "local", tmp_path / "spark")
    assert load_manifest(tmp_path / "spark").label_values == ["0", "1", "x"]
    blank = tmp_path / "blank.csv"
    blank.write_text(src.read_text().replace(",x\n", ",\n", 1))
    for engine in ("local", "spark"):
        with pytest.raises(BigModelError, match="label column 'label' has missing values"):
            prepare(str(blank), tmp_path / f"b-{engine}", engine=engine)
        assert not (tmp_path / f"b-{engine}").exists()


def test_a_delta_table_at_two_versions(spark, tmp_path: Path):
    deltalake = pytest.importorskip("deltalake")
    rng = np.random.default_rng(0)

    def rows(n: int) -> pa.Table:
        return pa.table({"a": rng.normal(size=n), "b": rng.normal(size=n), "label": rng.integers(0, 2, n)})

    table = tmp_path / "table"
    deltalake.write_deltalake(str(table), rows(300))
    deltalake.write_deltalake(str(table), rows(200), mode="append")
    for version in (0, 1):
        src = f"delta:{table}@{version}"
        prepare(src, tmp_path / f"l{version}", seed=4)
        m = prepare(src, tmp_path / f"s{version}", seed=4, engine="spark")
        assert (
            m.source_version == version
            and m.splits["train"].rows + m.splits["val"].rows == 300 + 200 * version
        )
        _same(tmp_path / f"l{version}", tmp_path / f"s{version}")


def test_dropped_columns_are_left_out_alike(spark, tmp_path: Path):
    (tmp_path / "csv").mkdir()
    src = _csv_folder(tmp_path / "csv")
    t = pcsv.read_csv(src / "part0.csv")
    odd = t.append_column("id", pa.array([f"row-{i}" for i in range(t.num_rows)]))
    odd = odd.add_column(0, "a.b`c", pa.array(["x"] * t.num_rows))
    (tmp_path / "odd").mkdir()
    pcsv.write_csv(odd, tmp_path / "odd" / "part0.csv")
    plain = prepare(str(src / "part0.csv"), tmp_path / "plain", seed=1)
    for engine in ("local", "spark"):
        m = prepare(str(tmp_path / "odd"), tmp_path / engine, seed=1, engine=engine, drop=["id", "a.b`c"])
        assert m.features == plain.features and m.content_hash == plain.content_hash
        with pytest.raises(BigModelError, match=r"--drop ib: no such column in .*odd.*\(columns: a\.b`c, f0"):
            prepare(str(tmp_path / "odd"), tmp_path / "x", engine=engine, drop=["ib"])
        with pytest.raises(BigModelError, match="--drop label: that is the label column"):
            prepare(str(tmp_path / "odd"), tmp_path / "x", engine=engine, drop=["label"])
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_partitioned_delta_table(spark, tmp_path: Path, shuffle: bool):
    from tests.unit.test_delta import _partitioned

    part, _ = _partitioned(tmp_path)
    prepare(f"delta:{part}", tmp_path / "l", seed=3, shuffle=shuffle)
    m = prepare(f"delta:{part}", tmp_path / "s", seed=3, shuffle=shuffle, engine="spark")
    assert m.features == ["a", "k", "b", "w"] and "日本 é" in (m.label_values or [])
    _same(tmp_path / "l", tmp_path / "s")  # label values too: the content hash holds codes, not names


def test_what_the_local_csv_reader_means_spark_means_too(spark, tmp_path: Path):
    """Found by a hostile probe: each of these gave Spark another dataset, or an error, silently."""
    rng = np.random.default_rng(1)

    def csv(path: Path, header: str, rows: list[str]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + "\n" + "\n".join(rows) + "\n")
        return path

    nums = [f"{rng.normal():.3f},{rng.integers(0, 9)}" for _ in range(300)]
    quoted = csv(tmp_path / "q.csv", "a,A,label", [f'{n},"say ""{i % 3}"""' for i, n in enumerate(nums)])
    names = tmp_path / "names"  # file order for --no-shuffle: "a b" before "a!b"? by path, not URI
    for f in ("a b.csv", "a!b.csv", "a%c.csv"):
        csv(names / f, "a,A,label", [f"{n},{i % 2}" for i, n in enumerate(nums[:100])])
    csv(names / "empty.csv", "a,A,label", [])  # an empty part file, as Spark writes them
    big = tmp_path / "big.parquet"
    pq.write_table(
        pa.table({"x": [2**60 + i for i in range(200)], "label": [i % 2 for i in range(200)]}), big
    )
    widths = tmp_path / "widths"  # int32 labels and float32 features in one file, 64-bit in the other
    widths.mkdir()
    for i, (ft, lt) in enumerate(((pa.float32(), pa.int32()), (pa.float64(), pa.int64()))):
        x, y = rng.normal(size=150), rng.integers(0, 2, 150)
        pq.write_table(pa.table({"x": pa.array(x, ft), "label": pa.array(y, lt)}), widths / f"p{i}.parquet")
    spell = ["true", "0", "1", "FALSE", "True", "false"]  # pyarrow's booleans; Spark's parser refused 1/0
    bools = csv(
        tmp_path / "bools.csv",
        "a,flag,label",
        [f"{n.split(',')[0]},{spell[i % 6]},{spell[(i * 7) % 6]}" for i, n in enumerate(nums)],
    )
    for src, kw in ((quoted, {}), (names, {"shuffle": False}), (big, {}), (widths, {}), (bools, {})):
        prepare(str(src), tmp_path / f"{src.stem}-local", seed=2, **kw)
        prepare(str(src), tmp_path / f"{src.stem}-spark", seed=2, engine="spark", **kw)
        _same(tmp_path / f"{src.stem}-local", tmp_path / f"{src.stem}-spark")
    assert load_manifest(tmp_path / "q-spark").label_values == ['say "0"', 'say "1"', 'say "2"']
    assert load_manifest(tmp_path / "bools-spark").label_values == [False, True]
    na = csv(
        tmp_path / "na.csv", "a,A,label", [f"{n},{'NA' if i % 9 else 'yes'}" for i, n in enumerate(nums)]
    )
    for engine in ("local", "spark"):
        with pytest.raises(BigModelError, match="label column 'label' has missing values"):
            prepare(str(na), tmp_path / f"na-{engine}", engine=engine)
