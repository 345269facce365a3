"""The prepared-dataset contract: a folder of Parquet shards per split and ``manifest.json``."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bigmodel.errors import BigModelError
from bigmodel.fsutil import read_json_as

MANIFEST = "manifest.json"
FORMAT = "bigmodel.dataset/1"
Task = Literal["binary", "multiclass", "regression", "lm"]


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[str]  # relative to the dataset folder
    rows: int = Field(ge=0)

    @field_validator("files")
    @classmethod
    def _inside_the_folder(cls, files: list[str]) -> list[str]:
        # a dataset is its folder: an edited manifest must not read shards from elsewhere
        for f in files:
            p = PurePosixPath(f)
            if not f or p.is_absolute() or ".." in p.parts:
                raise ValueError(f"shard {f!r} is not a path inside the dataset folder")
        return files


class Manifest(BaseModel):
    """What a prepared dataset holds. Feature columns are float32; the label column holds class
    codes 0..K-1 (int64) for classification and float32 targets for regression. A language-modelling
    (``lm``) dataset has one column, ``tokens``: rows of ``context + 1`` token ids (bytes), the
    model reads the first ``context`` and predicts the last ``context``."""

    model_config = ConfigDict(extra="forbid")
    format: str = FORMAT
    name: str
    source: str  # as given; a Delta table as delta:PATH@VERSION (the version read)
    source_version: int | None = None  # Delta sources: the table version read
    task: Task
    features: list[str]
    label: str
    label_values: list[Any] | None = None  # classification: original label of each code
    splits: dict[str, Split]
    mean: list[float]  # per feature, training split
    std: list[float]  # per feature, training split (1.0 where a feature is constant)
    target_mean: float = 0.0  # regression target, training split
    target_std: float = 1.0
    context: int = 0  # lm: tokens a model reads per row
    vocab: int = 0  # lm: number of token ids (256 for bytes)
    seed: int
    val_fraction: float
    shuffled: bool = False  # rows written in a random order (by seed), not the source's
    content_hash: str  # sha256 over the shard files' hashes, in order
    file_hashes: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.task != "lm" and not len(self.mean) == len(self.std) == len(self.features):
            raise ValueError(
                f"mean and std need one value per feature ({len(self.features)}), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if self.task in ("binary", "multiclass") and not self.label_values:
            raise ValueError(f"a {self.task} dataset needs label_values, one per class")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.label_values or []) if self.task != "regression" else 0

    @property
    def num_outputs(self) -> int:
        if self.task == "lm":
            return self.vocab
        return self.num_classes if self.task == "multiclass" else 1

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise BigModelError(f"dataset {self.name} has no split '{name}' (has: {', '.join(self.splits)})")
        return self.splits[name]


def load_manifest(folder: str | Path) -> Manifest:
    """Read and validate ``folder/manifest.json``; a one-line error if it is missing or malformed."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise BigModelError(f"dataset folder not found: {folder}")
    missing = f"{folder} is not a prepared dataset (no {MANIFEST}); run 'bigmodel data prepare'"
    manifest = read_json_as(path, Manifest, missing=missing, fmt=FORMAT)
    for split in manifest.splits.values():
        for f in split.files:
            if not (Path(folder) / f).is_file():
                raise BigModelError(f"dataset {folder} is incomplete: shard {f} is missing")
    return manifest
