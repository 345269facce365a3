"""The report's JSON shape, its table and plots, and bad input through the CLI entry point."""

import json
from pathlib import Path

import pytest

from bigmodel import artifacts
from bigmodel.cli import main
from bigmodel.compress import compression_report, export_onnx, prune, quantize
from bigmodel.errors import BigModelError
from tests.compress_helpers import trained, tree_digest

SIDE = {"params", "file_bytes", "latency_ms_b1", "latency_ms_b64", "metric"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(tmp_path_factory, "r", hidden=[64, 32], epochs=3)


def test_prune_report_shape(model: Path, tmp_path: Path):
    out = prune(model, sparsity=0.7, finetune_epochs=0, out=tmp_path / "p", runs=5)
    assert set(out) >= {"original", "compressed", "ratios", "model_dir"}
    assert set(out["original"]) >= SIDE and set(out["compressed"]) >= SIDE
    r = out["ratios"]
    assert {"params", "file_bytes", "speedup_b1", "speedup_b64", "metric_delta"} <= set(r)
    assert r["file_bytes"] == pytest.approx(out["original"]["file_bytes"] / out["compressed"]["file_bytes"])
    assert out["compressed"]["nonzero_params"] < 0.35 * out["compressed"]["params"]
    lineage = artifacts.read_meta(tmp_path / "p").lineage
    assert lineage.method == "prune" and lineage.params["sparsity"] == 0.7
    assert lineage.parent == {"path": str(model.resolve()), "digest": artifacts.digest(model)}


def test_report_command_plots(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    prune(model, sparsity=0.5, structured=True, finetune_epochs=0, out=tmp_path / "s", runs=5)
    rc = main(
        [
            "compress",
            "report",
            str(model),
            str(tmp_path / "s"),
            "--plots",
            str(tmp_path / "plots"),
            "--runs",
            "5",
            "--json",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [Path(m["path"]).name for m in result["models"]] == ["model", "s"]
    assert all(set(m) >= SIDE for m in result["models"])
    for png in ("size.png", "latency.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    res = compression_report([model], runs=5)
    assert res["plots"] == {}
    with pytest.raises(BigModelError, match=r"size\.png already exists"):  # a rerun never overwrites
        compression_report([model], plots=tmp_path / "plots", runs=5)


def test_file_bytes_do_not_depend_on_whether_the_original_was_exported(model: Path, tmp_path: Path):
    """File bytes are what the serving runtime reads: an exported model runs on ONNX Runtime from
    model.onnx alone, so its PyTorch weights are not counted twice and an int8 model's ratio holds."""
    import shutil

    exported = tmp_path / "exported"
    shutil.copytree(model, exported)
    export_onnx(exported)
    quantize(model, method="dynamic", max_drop=None, out=tmp_path / "q", runs=3)
    plain, onnx, q = compression_report([model, exported, tmp_path / "q"], runs=3)["models"]
    assert (plain["runtime"], onnx["runtime"], q["runtime"]) == ("torch", "onnxruntime", "onnxruntime")
    meta = artifacts.read_meta(exported)
    assert onnx["file_bytes"] == meta.files["model.onnx"].bytes + (exported / "model.json").stat().st_size
    # int8 reads its weights from model.safetensors (ONNX external data): both files count, once
    assert q["file_bytes"] == artifacts.dir_bytes(tmp_path / "q")
    assert plain["file_bytes"] / q["file_bytes"] == pytest.approx(
        onnx["file_bytes"] / q["file_bytes"], rel=0.1
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prune", "{m}", "--sparsity", "1.0"], "--sparsity must be in [0, 1)"),
        (["prune", "{m}", "--sparsity", "-0.1"], "--sparsity must be in [0, 1)"),
        (["quantize", "{m}", "--method", "int3"], "unknown --method 'int3'"),
        (["quantize", "{m}", "--backend", "tensorrt"], "unknown --backend 'tensorrt'"),
        (["quantize", "{m}/nope"], "model directory not found"),
        (["distill", "{m}", "--hidden", "8", "--alpha", "2"], "--alpha in [0, 1]"),
        (["prune", "{m}", "--out", "{m}"], "already exists"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_the_source_is_untouched(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
):
    before = tree_digest(model)
    rc = main(["compress", *(a.format(m=model) for a in argv)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert tree_digest(model) == before


def test_changed_weights_and_int8_layers_are_refused(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    before = tree_digest(bad)
    assert main(["compress", "prune", str(bad), "--finetune-epochs", "0"]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err
    assert tree_digest(bad) == before and not Path(str(bad) + "-pruned90").exists()

    main(
        [
            "compress",
            "quantize",
            str(model),
            "--backend",
            "torch",
            "--out",
            str(tmp_path / "q"),
            "--runs",
            "3",
            "--json",
        ]
    )
    capsys.readouterr()
    for verb in (["prune"], ["quantize"]):
        assert main(["compress", *verb, str(tmp_path / "q"), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "layer 'net.0' is already int8" in err, err


def test_a_ratio_below_one_is_said_the_other_way_round():
    """A tiny MLP's int8 directory is bigger than its float one: it said "0.5384x smaller"."""
    from bigmodel.compress.report import ratio_words

    assert ratio_words(10_025, 5_397, latency=False) == "1.858x smaller"
    assert ratio_words(5_397, 10_025, latency=False) == "1.858x larger"
    assert ratio_words(2.0, 1.0, latency=True) == "2x faster"
    assert ratio_words(1.0, 2.0, latency=True) == "2x slower"
