"""The model directory: the one contract between stages.

    model.safetensors   weights (never a pickle)
    model.json          architecture, task, features, preprocessing, metrics, config, lineage,
                        and the sha256 + size of every artifact file in the directory

model.json is written last, atomically, so a directory without it is not a model; every load
checks the recorded hashes, so a changed file is refused. The digest of a model (used for lineage
and the registry) is the sha256 of its model.json, which covers every file through their hashes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_path, read_json_as, sha256_file, write_json_atomic

# torch is imported by the functions that touch weights: the registry, the predict client and
# `bigmodel data` read and check model.json without paying ~1.5 s for it.
if TYPE_CHECKING:
    import torch
    from torch import nn

    from bigmodel.tasks import TaskSpec

WEIGHTS = "model.safetensors"
META = "model.json"
FORMAT = "bigmodel.model/1"


class FileInfo(BaseModel):
    sha256: str
    bytes: int


class Lineage(BaseModel):
    model_config = ConfigDict(extra="allow")
    method: str = "train"  # train, prune, quantize, distill, consolidate, ...
    parent: dict[str, Any] | None = None  # {"path": ..., "digest": ...}
    params: dict[str, Any] = Field(default_factory=dict)
    data_manifest_hash: str | None = None


class ModelMeta(BaseModel):
    """model.json. Later stages may add their own keys (``extra="allow"``)."""

    model_config = ConfigDict(extra="allow")
    format: str = FORMAT
    architecture: dict[str, Any]
    task: dict[str, Any]  # TaskSpec.to_json()
    features: list[str]
    label: str | None = None
    preprocessing: dict[str, Any] = Field(default_factory=dict)  # {"mean": [...], "std": [...]}
    metrics: dict[str, float] = Field(default_factory=dict)
    config: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None  # {"path", "name", "content_hash"}
    lineage: Lineage = Field(default_factory=Lineage)
    files: dict[str, FileInfo] = Field(default_factory=dict)
    created_at: str = ""

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, FileInfo]) -> dict[str, FileInfo]:
        for name in files:
            check_file_name(name)
        return files

    @property
    def spec(self) -> TaskSpec:
        from bigmodel.tasks import TaskSpec

        return TaskSpec.from_json(self.task)


def check_file_name(name: str) -> str:
    """An artifact is a plain file in its model directory. model.json names the files that are
    hashed, registered and checked out, so a name like ``../../x`` would read or write outside it."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"artifact name {name!r} is not a plain file name")
    return name


@dataclass
class LoadedModel:
    path: Path
    meta: ModelMeta
    module: nn.Module

    @property
    def spec(self) -> TaskSpec:
        return self.meta.spec


def save_weights(path: str | Path, module: nn.Module, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write a module's state dict (or ``state`` in its place) as safetensors, atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in (state or module.state_dict()).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})


def write_model_dir(
    path: str | Path,
    module: nn.Module,
    meta: ModelMeta,
    *,
    extra_files: tuple[str, ...] = (),
    state: dict[str, torch.Tensor] | None = None,
) -> ModelMeta:
    """Write weights, then model.json (last) with the hash of every artifact, into ``path``.

    ``extra_files`` are other artifacts already written in ``path`` (e.g. model.onnx) that the
    model.json must vouch for; ``state`` replaces ``module.state_dict()`` on disk (a compact
    form that ``module``'s layers load back, e.g. ``models.layers.compact_state``).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # Artifacts the previous model.json here vouched for (e.g. an export of the model a resumed run
    # replaces) describe an old model: kept, they would be served or refused as strangers later.
    stale = []
    if (path / META).is_file():
        try:
            stale = [n for n in read_meta(path).files if n not in (WEIGHTS, *extra_files)]
        except BigModelError:
            stale = []
    save_weights(path / WEIGHTS, module, state)
    meta = meta.model_copy(deep=True)
    meta.files = {
        name: FileInfo(sha256=sha256_file(path / name), bytes=(path / name).stat().st_size)
        for name in [WEIGHTS, *extra_files]
    }
    meta.created_at = meta.created_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(path / META, meta.model_dump(mode="json"))
    for name in stale:  # after the new model.json no longer names them
        (path / name).unlink(missing_ok=True)
    return meta


def add_files(path: str | Path, names: list[str], **updates: Any) -> ModelMeta:
    """Vouch for new artifacts already written into a model directory (e.g. model.onnx) and set
    top-level model.json keys; model.json is rewritten atomically, the weights are untouched.
    A name model.json already records is a replacement (a re-export): its old hash is not checked."""
    path = Path(path)
    meta = read_meta(path)
    kept = meta.model_copy(update={"files": {n: f for n, f in meta.files.items() if n not in names}})
    if "onnx" in updates:  # the entry being replaced may name the files being replaced
        kept = kept.model_copy(update={"onnx": None})
    verify(path, kept)
    for name in names:
        meta.files[name] = FileInfo(sha256=sha256_file(path / name), bytes=(path / name).stat().st_size)
    for key, value in updates.items():
        setattr(meta, key, value)
    write_json_atomic(path / META, meta.model_dump(mode="json"))
    return meta


def read_meta(path: str | Path) -> ModelMeta:
    """Read and validate model.json (no hash checks: see ``verify``)."""
    path = Path(path)
    if not path.is_dir():
        raise BigModelError(
            f"{path} is a file, not a model directory"
            if path.exists()
            else f"model directory not found: {path}"
        )
    return read_json_as(
        path / META, ModelMeta, missing=f"{path} is not a model directory (no {META})", fmt=FORMAT
    )


def verify(path: str | Path, meta: ModelMeta) -> None:
    """Refuse a directory whose files differ from what model.json recorded."""
    path = Path(path)
    if WEIGHTS not in meta.files:
        raise BigModelError(f"{path / META} records no hash for {WEIGHTS}")
    for name, info in meta.files.items():
        f = path / name
        if f.is_symlink():  # it could point anywhere, and what it points at can change
            raise BigModelError(f"{f}: artifact {name} is a symbolic link; artifacts are plain files")
        if not f.is_file():
            raise BigModelError(f"{path}: artifact {name} is missing")
        got = sha256_file(f)
        if got != info.sha256:
            raise BigModelError(
                f"{f}: sha256 mismatch (model.json says {info.sha256[:12]}..., file is "
                f"{got[:12]}...): the file changed after it was written; refusing to load it"
            )

    onnx = getattr(meta, "onnx", None)
    if onnx is not None:
        _check_onnx_files(path, meta, onnx)


def _check_onnx_files(path: Path, meta: ModelMeta, onnx: Any) -> None:
    """Every file ONNX Runtime would open (the graph named in ``onnx.file``, its external data)
    must be a hashed artifact of this directory: otherwise swapping an outside file would change
    the answers of a registered version without any check noticing."""
    if not isinstance(onnx, dict) or not isinstance(onnx.get("file"), str):
        raise BigModelError(f"{path / META}: 'onnx' must be an object with a 'file' name")
    used = {onnx["file"]}
    if isinstance(onnx.get("external_data"), str):
        used.add(onnx["external_data"])
    if onnx["file"] in meta.files:
        import onnx as onnx_lib

        try:
            graph = onnx_lib.load(str(path / onnx["file"]), load_external_data=False).graph
        except Exception as err:  # protobuf raises its own DecodeError
            raise BigModelError(f"{path / onnx['file']}: not a readable ONNX file ({err})") from None
        for init in graph.initializer:
            used.update(e.value for e in init.external_data if e.key == "location")
    for name in sorted(used):
        if name not in meta.files:
            raise BigModelError(
                f"{path / META}: the ONNX model uses {name!r}, which is not a hashed artifact of "
                "this directory; refusing to load it"
            )


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise BigModelError(f"cannot read weights {path}: {err}") from None


def load_model(path: str | Path, *, check: bool = True) -> LoadedModel:
    """Load a model directory: verify hashes, rebuild the architecture, load the safetensors weights."""
    from bigmodel.models import build_model

    path = Path(path)
    meta = read_meta(path)
    if check:
        verify(path, meta)
    module = build_model(meta.architecture)
    state = load_state(path / WEIGHTS)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BigModelError(
            f"{path / WEIGHTS} does not fit the architecture in {META}: {str(err).splitlines()[0]}"
        ) from None
    module.eval()
    return LoadedModel(path, meta, module)


def digest(path: str | Path) -> str:
    """A model's identity: sha256 of its model.json (which holds every artifact's hash)."""
    return hashlib.sha256((Path(path) / META).read_bytes()).hexdigest()


def dir_bytes(path: str | Path, meta: ModelMeta | None = None) -> int:
    """Bytes of the model's artifacts on disk (weights, ONNX, ...), model.json included."""
    meta = meta or read_meta(path)
    return sum(f.bytes for f in meta.files.values()) + (Path(path) / META).stat().st_size
