"""`bigmodel registry ...` as a user drives it: --json results, one-line errors with exit code 2."""

import json
from pathlib import Path

from bigmodel.registry import Registry
from tests.conftest import run_cli
from tests.models import make_model_dir


def _json(out) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_register_alias_list_show_compare_delete(tmp_path: Path):
    reg = ["--registry", str(tmp_path / "reg")]
    a = make_model_dir(tmp_path / "a", seed=1)
    b = make_model_dir(tmp_path / "b", seed=2)
    Registry(tmp_path / "reg").register(a, "iris")  # the Python API and the CLI share the registry
    # the environment variable names the registry too
    rec = _json(
        run_cli(
            "registry",
            "register",
            str(b),
            "--name",
            "iris",
            "--json",
            env={"BIGMODEL_REGISTRY": str(tmp_path / "reg")},
        )
    )
    assert rec["version"] == 2 and rec["files"]["model.safetensors"]["bytes"] > 0
    shown = _json(run_cli("registry", "alias", "iris", "1", "production", *reg, "--json"))
    assert shown["ref"] == "iris:1" and shown["aliases"] == ["production"]
    table = run_cli("registry", "compare", "iris:1", "iris@production", "iris:2", *reg)
    assert table.returncode == 0 and "accuracy" in table.stdout and "production" in table.stdout
    refused = run_cli("registry", "delete", "iris:1", *reg)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: iris:1 is aliased as production; move the alias first or pass --force to delete it with its aliases"
    )
    gone = _json(run_cli("registry", "delete", "iris:1", "--force", *reg, "--json"))
    assert gone["aliases_removed"] == ["production"]
    listed = _json(run_cli("registry", "list", *reg, "--json"))
    assert [v["ref"] for v in listed["versions"]] == ["iris:2"]
    # the server refuses an unknown model at startup with one line, before answering anything
    bad = run_cli("serve", *reg, "--models", "iris,ghost", "--port", "0")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: no model named 'ghost' in registry {tmp_path / 'reg'} (models: iris)"
    ]


def test_reading_a_folder_that_holds_no_registry_is_one_line_and_creates_nothing(tmp_path: Path):
    typo = tmp_path / "regsitry"
    for args in (["registry", "list"], ["registry", "show", "iris:1"], ["serve", "--port", "0"]):
        out = run_cli(*args, "--registry", str(typo))
        assert out.returncode == 2 and out.stderr.strip().splitlines() == [
            f"error: no registry at {typo} (`bigmodel registry register MODEL_DIR --name NAME` creates one)"
        ], args
    assert not typo.exists()
