from pathlib import Path

import pytest

from bigmodel.data import generate_synthetic, load_manifest
from bigmodel.errors import BigModelError


def test_seeded_and_sized(tmp_path: Path):
    a = generate_synthetic(tmp_path / "a", rows=70000, features=3, seed=4)
    b = generate_synthetic(tmp_path / "b", rows=70000, features=3, seed=4)
    assert a.content_hash == b.content_hash
    assert a.splits["train"].rows + a.splits["val"].rows == 70000
    assert load_manifest(tmp_path / "a").task == "binary"
    # row groups are the reader's unit: at most 65536 rows each
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(tmp_path / "a" / a.splits["train"].files[0]).metadata
    assert meta.num_row_groups >= 1 and all(
        meta.row_group(i).num_rows <= 65536 for i in range(meta.num_row_groups)
    )


@pytest.mark.parametrize(
    ("task", "classes", "outputs"), [("binary", 2, 1), ("multiclass", 5, 5), ("regression", 0, 1)]
)
def test_tasks(tmp_path: Path, task: str, classes: int, outputs: int):
    m = generate_synthetic(tmp_path / task, rows=500, features=4, task=task, classes=classes)
    assert m.task == task and m.num_outputs == outputs


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(BigModelError, match="--rows"):
        generate_synthetic(tmp_path / "x", rows=0, features=3)
    with pytest.raises(BigModelError, match="--classes"):
        generate_synthetic(tmp_path / "x", rows=10, features=3, task="multiclass", classes=2)
