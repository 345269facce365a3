"""The predict client's input checks (the server itself is tested in tests/e2e/test_serve.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bigmodel.errors import BigModelError
from bigmodel.serve.client import read_rows


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", ""])
def test_a_value_json_cannot_carry_is_refused_with_its_column_and_row(tmp_path: Path, value: str) -> None:
    # JSON has no NaN or Infinity: sent as is, the server could only answer "not valid JSON".
    path = tmp_path / "rows.csv"
    path.write_text(f"a,b\n1,2\n3,{value}\n")
    with pytest.raises(BigModelError, match=r"feature 'b' is missing, NaN or infinite in row 1$"):
        read_rows(path, ["a", "b"])


def test_rows_come_back_in_the_model_s_feature_order(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"b": 2, "a": 1, "label": "x"}, {"a": 3, "b": 4}]))
    assert read_rows(path, ["a", "b"]).tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1, 2], [3, "4"]], r"feature 'b' in row 1 must be a number, got '4'$"),
        ([{"a": True, "b": 2}], r"feature 'a' in row 0 must be a number, got True$"),
        ([[1, 2, [3]]], r"value 2 in row 0 must be a number"),
        ([1, 2], r"row 0 must be a list of numbers or an object of features$"),
    ],
)
def test_json_rows_hold_only_numbers(tmp_path: Path, rows: list, message: str) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(BigModelError, match=message):
        read_rows(path, ["a", "b"])
