"""Model families as typed architectures: model.json dicts load unchanged, families say what they support."""

import pytest
import torch

from bigmodel.errors import BigModelError
from bigmodel.models import (
    MLPArch,
    SentenceEncoderArch,
    TransformerArch,
    build_model,
    mlp_architecture,
    parse_architecture,
    sentence_architecture,
    transformer_architecture,
)


def test_stored_dicts_keep_their_exact_keys():
    assert mlp_architecture(4, 3, [8]) == {
        "name": "mlp",
        "in_features": 4,
        "out_features": 3,
        "hidden": [8],
        "activation": "relu",
        "dropout": 0.0,
    }
    assert list(transformer_architecture("tiny", 16)) == [
        "name",
        "size",
        "layers",
        "width",
        "heads",
        "context",
        "vocab",
        "dropout",
    ]
    bert = {"hidden_size": 32, "vocab_size": 100, "_name_or_path": "x", "transformers_version": "4"}
    assert sentence_architecture(bert, 64) == {
        "name": "sentence_encoder",
        "bert": {"hidden_size": 32, "vocab_size": 100},
        "pooling": "mean",
        "normalize": True,
        "max_length": 64,
    }


def test_old_files_load_with_defaults_and_unknown_keys():
    # an early model.json: no activation/dropout, plus a key this version does not know
    arch = parse_architecture({"name": "mlp", "in_features": 3, "out_features": 1, "hidden": [4], "old": 1})
    assert isinstance(arch, MLPArch) and arch.activation == "relu" and arch.compact is None
    compressed = {**mlp_architecture(3, 1, [4]), "compact": {"net.0": {"kind": "sparse"}}, "dtype": "float16"}
    model = build_model(compressed)
    assert next(model.parameters()).dtype == torch.float16


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"name": "cnn"}, "unknown model 'cnn' \\(known: mlp, transformer, sentence_encoder\\)"),
        ({"name": "mlp", "in_features": 0, "out_features": 1, "hidden": []}, "mlp architecture: in_features"),
        (
            {"name": "mlp", "in_features": 2, "out_features": 1, "hidden": [], "activation": "foo"},
            "unknown activation 'foo'",
        ),
        ({"name": "transformer", "layers": 2}, "transformer architecture: width: Field required"),
    ],
)
def test_bad_architectures_are_one_line_errors(arch: dict, message: str):
    with pytest.raises(BigModelError, match=message):
        parse_architecture(arch)


def test_families_say_what_they_support_and_make_example_inputs():
    mlp = parse_architecture(mlp_architecture(4, 3, [8]))
    lm = parse_architecture(transformer_architecture("tiny", 16))
    enc = parse_architecture(sentence_architecture({"vocab_size": 100}, 8))
    assert isinstance(lm, TransformerArch) and isinstance(enc, SentenceEncoderArch)
    assert mlp.supports.prune and mlp.supports.int8 and mlp.supports.distill and mlp.supports.onnx_export
    assert lm.supports.int8 and lm.supports.distill and lm.supports.onnx_export and not lm.supports.prune
    assert not enc.supports.onnx_export and enc.reads_text and enc.metric == "cosine_to_fp32"
    (x,) = mlp.example_inputs(5, mean=[1.0] * 4, std=[2.0] * 4)
    assert x.shape == (5, 4) and x.dtype == torch.float32
    (t,) = lm.example_inputs(2)
    assert t.shape == (2, 16) and t.dtype == torch.int64 and int(t.max()) < 256
    ids, mask = enc.example_inputs(3)
    assert ids.shape == mask.shape == (3, 8) and int(ids.max()) < 100
    with torch.no_grad():
        assert build_model(transformer_architecture("tiny", 16))(t).shape == (2, 16, 256)


def test_each_family_describes_itself_for_people():
    """The LM's loss plot was titled "transformer [10, 10]" (the MLP's default hidden sizes)."""
    from bigmodel.models import mlp_architecture, transformer_architecture
    from bigmodel.models.arch import parse_architecture

    assert parse_architecture(mlp_architecture(30, 2, [10, 10])).describe() == "mlp 30-10-10-2"
    lm = parse_architecture(transformer_architecture("tiny", 16)).describe()
    assert lm == "transformer tiny (2 layers, width 32, context 16)" and "[" not in lm
