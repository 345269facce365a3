"""What `import bigmodel` loads, and that lazily exported names resolve to the right objects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bigmodel

HEAVY = ("torch", "pyarrow", "sqlalchemy", "fsspec", "onnx", "onnxruntime", "captum", "flwr", "fastapi")


def _loaded_after(code: str) -> list[str]:
    """The heavy top-level packages a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout.splitlines()[-1]))


def test_the_cli_parser_loads_no_heavy_package() -> None:
    # `bigmodel --help` and every verb's argument parsing: torch alone would add ~1.5 s.
    assert _loaded_after("import bigmodel, bigmodel.cli\nbigmodel.cli.build_parser()") == []


def test_light_verbs_do_not_load_torch(prepared: Path) -> None:
    code = (
        "import contextlib, io\n"
        "from bigmodel.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    assert main(['data', 'stats', {str(prepared)!r}, '--json']) == 0\n"
        "import bigmodel.serve.client, bigmodel.registry.store\n"
    )
    assert "torch" not in _loaded_after(code)


def test_functions_win_over_subpackages_whatever_is_imported_first() -> None:
    # Importing a subpackage sets its name on the parent package: the verbs (`bigmodel.train` & co.)
    # live under other names, and `from bigmodel.training import evaluate` is the function, not the module.
    code = (
        "import bigmodel.training.loop, bigmodel.training.evaluation, bigmodel.training.consolidation\n"
        "import bigmodel.online_learning.learner, bigmodel.explanations.core, bigmodel.federation.config\n"
        "import inspect, bigmodel\n"
        "from bigmodel.training import consolidate, evaluate, train\n"
        "for f in (bigmodel.train, bigmodel.online, bigmodel.explain, bigmodel.federated,\n"
        "          bigmodel.evaluate, bigmodel.consolidate, consolidate, evaluate, train):\n"
        "    assert inspect.isfunction(f), f\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", bigmodel.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    value = getattr(bigmodel, name)
    assert callable(value), name
    assert not isinstance(value, type(bigmodel)), f"bigmodel.{name} is a module"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bigmodel.nope  # noqa: B018
    with pytest.raises(ImportError):
        from bigmodel.data import nope  # type: ignore[attr-defined]  # noqa: F401
