"""explain and online say in one line which models they cannot handle (a new user's trial found
tracebacks for a text model, zeros from Integrated Gradients on an int8 model, and feedback that a
server accepted for an int8 version and then dropped)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bigmodel import artifacts
from bigmodel.compress.int8 import to_int8
from bigmodel.errors import BigModelError
from bigmodel.explanations.core import explain_batch
from bigmodel.models import build_model, transformer_architecture
from bigmodel.online_learning.learner import OnlineLearner, not_learnable
from bigmodel.online_learning.policy import OnlineConfig
from bigmodel.tasks import TaskSpec
from tests.models import make_model_dir


def _lm(path: Path) -> artifacts.LoadedModel:
    arch = transformer_architecture("tiny", 16)
    meta = artifacts.ModelMeta(architecture=arch, task=TaskSpec("lm", 256).to_json(), features=["bytes"])
    artifacts.write_model_dir(path, build_model(arch), meta)
    return artifacts.load_model(path)


def _int8(path: Path) -> artifacts.LoadedModel:
    src = artifacts.load_model(make_model_dir(path.with_name("float")))
    layers = to_int8(src.module, ["net.0", "net.2", "net.4"])
    meta = src.meta.model_copy(update={"architecture": {**src.meta.architecture, "compact": layers}})
    artifacts.write_model_dir(path, src.module, meta)
    return artifacts.load_model(path)


def test_a_text_model_is_refused_by_explain_and_online(tmp_path: Path):
    lm = _lm(tmp_path / "lm")
    with pytest.raises(
        BigModelError, match="explanations handle tabular \\(mlp\\) models, not a transformer"
    ):
        explain_batch(lm, np.zeros((1, 1), dtype=np.float32))
    with pytest.raises(
        BigModelError, match="online learning handles tabular \\(mlp\\) models, not a transformer"
    ):
        OnlineLearner(lm, 1, OnlineConfig())


def test_an_int8_model_is_explained_by_ablation_only_and_not_learned_online(tmp_path: Path):
    q = _int8(tmp_path / "q")
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32) * 2 + np.arange(6, dtype=np.float32)
    for method in ("integrated_gradients", "gradient_shap"):
        with pytest.raises(
            BigModelError, match=f"{method} follows gradients.*use the feature_ablation method"
        ):
            explain_batch(q, x, method)
    out = explain_batch(q, x, "feature_ablation")
    assert any(abs(a) > 0 for row in out["rows"] for a in row["attributions"].values())
    assert "int8 model keeps its weights as integers" in (not_learnable(q.meta) or "")
    assert not_learnable(artifacts.read_meta(tmp_path / "float")) is None
    assert torch.is_tensor(next(iter(q.module.state_dict().values())))
