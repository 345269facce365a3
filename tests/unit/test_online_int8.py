"""Online learning from an int8 model: one line, not an optimizer traceback (issue 22)."""

from pathlib import Path

import pytest

from bigmodel import artifacts
from bigmodel.compress.int8 import to_int8
from bigmodel.errors import BigModelError
from bigmodel.online_learning.learner import OnlineLearner
from bigmodel.online_learning.policy import OnlineConfig
from tests.models import make_model_dir


def test_an_int8_model_is_refused_in_one_line(tmp_path: Path):
    loaded = artifacts.load_model(make_model_dir(tmp_path / "m"))
    to_int8(loaded.module, ["net.0", "net.2", "net.4"])
    with pytest.raises(BigModelError, match="version 3 has no float weights to learn from feedback"):
        OnlineLearner(loaded, 3, OnlineConfig())
