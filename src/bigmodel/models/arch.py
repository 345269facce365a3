"""Model families as typed, validated architectures: MLP, transformer LM, sentence encoder.

model.json stores an architecture as a plain dict (``{"name": "mlp", "in_features": 30, ...}``);
``parse_architecture`` reads it into one of the families below at the boundary, and the dict itself
stays the stored truth, so old files keep their exact keys. Each family knows how to build its
module and a batch of example inputs, and says in ``supports`` what the stages may do with it:
a stage asks ``arch.supports.prune`` instead of comparing ``arch["name"]`` with a string.

Compression may add ``compact`` (module path -> compact kind: sparse, int8) and ``dtype`` (float16,
bfloat16) to any family; ``build_module`` applies them (see ``bigmodel.models.layers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator
from torch import nn

from bigmodel.errors import BigModelError
from bigmodel.models.layers import apply_layers, set_dtype
from bigmodel.models.mlp import ACTIVATIONS, MLP
from bigmodel.models.sentence import SentenceEncoder
from bigmodel.models.transformer import VOCAB, Transformer

Compact = dict[str, dict[str, Any]]
DType = Literal["float16", "bfloat16"]
# Keys this version does not know are ignored rather than refused: model.json files written by any
# version keep loading, and the stored dict (not this view of it) is what gets written back.
_CONFIG = ConfigDict(extra="ignore", frozen=True)


@dataclass(frozen=True)
class Supports:
    """What the stages may do with a family; each stage asks here instead of comparing names."""

    prune: bool = False  # compress prune (unstructured and structured)
    int8: bool = False  # compress quantize DIR (int8, fp16, bf16), scored on its dataset (LM: held-out text)
    distill: bool = False  # teacher (and student) of compress distill
    onnx_export: bool = False  # bigmodel export: one input tensor with a dynamic batch dimension
    routes: tuple[str, ...] = ()  # the server's route groups that can run it
    explain: bool = False  # feature attributions over a table of rows (Captum)
    online: bool = False  # learning from labelled rows (feedback) by SGD


class MLPArch(BaseModel):
    """Tabular features (B, F) float32 -> logits (B, out): see ``bigmodel.models.mlp``."""

    model_config = _CONFIG
    supports: ClassVar[Supports] = Supports(
        prune=True, int8=True, distill=True, onnx_export=True, routes=("infer",), explain=True, online=True
    )
    reads_text: ClassVar[bool] = False
    metric: ClassVar[str | None] = None

    name: Literal["mlp"] = "mlp"
    in_features: PositiveInt
    out_features: PositiveInt
    hidden: list[PositiveInt]
    activation: str = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    compact: Compact | None = None
    dtype: DType | None = None

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, v: str) -> str:
        if v not in ACTIVATIONS:
            raise ValueError(f"unknown activation {v!r} (known: {', '.join(ACTIVATIONS)})")
        return v

    def module(self) -> nn.Module:
        """The plain module, before compact layers and dtype (see ``build_module``)."""
        return MLP(self.in_features, self.out_features, self.hidden, self.activation, self.dropout)

    def describe(self) -> str:
        """For people (tables, plot titles): ``mlp 30-64-32-2``."""
        return f"mlp {'-'.join(map(str, [self.in_features, *self.hidden, self.out_features]))}"

    def example_inputs(
        self, batch: int, *, mean: list[float] | None = None, std: list[float] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """(B, F) float32 raw features, around the dataset's statistics when given."""
        x = torch.randn(batch, self.in_features)
        if mean is not None and std is not None:
            x = x * torch.tensor(std) + torch.tensor(mean)
        return (x,)


class TransformerArch(BaseModel):
    """Byte tokens (B, T) int64 -> next-byte logits (B, T, vocab): see ``bigmodel.models.transformer``."""

    model_config = _CONFIG
    # int8 and distill in compress (bits per byte, tokens/s by generation); not prunable yet
    supports: ClassVar[Supports] = Supports(int8=True, distill=True, onnx_export=True, routes=("generate",))
    reads_text: ClassVar[bool] = False
    metric: ClassVar[str | None] = None

    name: Literal["transformer"] = "transformer"
    size: str | None = None  # the named size it was built from, for people: layers/width/heads decide
    layers: PositiveInt
    width: PositiveInt
    heads: PositiveInt
    context: PositiveInt
    vocab: PositiveInt = VOCAB
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    compact: Compact | None = None
    dtype: DType | None = None

    def module(self) -> nn.Module:
        """The plain module, before compact layers and dtype (see ``build_module``)."""
        return Transformer(self.layers, self.width, self.heads, self.context, self.vocab, self.dropout)

    def describe(self) -> str:
        """For people: ``transformer small (4 layers, width 256, context 256)``."""
        named = f" {self.size}" if self.size else ""
        return f"transformer{named} ({self.layers} layers, width {self.width}, context {self.context})"

    def example_inputs(
        self, batch: int, *, mean: list[float] | None = None, std: list[float] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """(B, context) int64 byte tokens (``mean``/``std`` do not apply to tokens)."""
        return (torch.randint(0, self.vocab, (batch, self.context)),)


class SentenceEncoderArch(BaseModel):
    """(input_ids, attention_mask) (B, T) int64 -> unit embeddings (B, H): see ``models.sentence``."""

    model_config = _CONFIG
    # Its model directories are what quantization writes (from the pretrained weights, by name);
    # they take two inputs and are read through the tokenizer shipped beside the weights. The server
    # runs them on text: OIP infer with a BYTES tensor, and OpenAI-style /v1/embeddings.
    supports: ClassVar[Supports] = Supports(routes=("infer", "embeddings"))
    reads_text: ClassVar[bool] = True  # timed on tokenized sentences, with the directory's tokenizer
    metric: ClassVar[str | None] = "cosine_to_fp32"  # recorded at compression against the fp32 model

    name: Literal["sentence_encoder"] = "sentence_encoder"
    bert: dict[str, Any]  # a transformers BertConfig, as its config.json spells it
    pooling: Literal["mean"] = "mean"
    normalize: bool = True
    max_length: PositiveInt = 256
    compact: Compact | None = None
    dtype: DType | None = None

    def module(self) -> nn.Module:
        """The plain module, before compact layers and dtype (see ``build_module``)."""
        return SentenceEncoder(self.bert)

    def describe(self) -> str:
        """For people: ``sentence_encoder (6 layers, width 384)``."""
        layers, width = self.bert.get("num_hidden_layers", "?"), self.bert.get("hidden_size", "?")
        return f"sentence_encoder ({layers} layers, width {width})"

    def example_inputs(
        self, batch: int, *, mean: list[float] | None = None, std: list[float] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Random token ids (B, T) and an all-ones attention mask, T = min(16, max_length)."""
        t = min(16, self.max_length)
        ids = torch.randint(0, int(self.bert.get("vocab_size", 30522)), (batch, t))
        return ids, torch.ones_like(ids)


Arch = MLPArch | TransformerArch | SentenceEncoderArch
FAMILIES = ("mlp", "transformer", "sentence_encoder")


class _Stored(BaseModel):
    # pydantic picks the family by "name" (a discriminated union): one validation, one clear error
    arch: Arch = Field(discriminator="name")


def parse_architecture(arch: Mapping[str, Any] | Arch) -> Arch:
    """The typed family of an architecture dict as stored in model.json (a typed one passes through).

    Raises ``BigModelError`` naming the family or the field that is wrong."""
    if isinstance(arch, MLPArch | TransformerArch | SentenceEncoderArch):
        return arch
    try:
        return _Stored(arch=dict(arch)).arch
    except ValidationError as err:
        e = err.errors()[0]
        name = arch.get("name")
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise BigModelError(f"unknown model '{name}' (known: {', '.join(FAMILIES)})") from None
        where = ".".join(str(p) for p in e["loc"][2:]) or "architecture"  # past ("arch", name)
        raise BigModelError(f"{name} architecture: {where}: {e['msg']}") from None


def int8_layers(arch: Arch) -> list[str]:
    """The layers compression made int8 (their weights are integers: no gradients, no SGD)."""
    return [path for path, layer in (arch.compact or {}).items() if layer.get("kind") == "int8"]


def build_module(arch: Arch) -> nn.Module:
    """The family's module with compression's compact layers swapped in and its dtype applied
    (weights are loaded separately)."""
    model = arch.module()
    apply_layers(model, arch.compact or {})
    if arch.dtype:
        set_dtype(model, arch.dtype)
    return model


def to_dict(arch: Arch) -> dict[str, Any]:
    """The dict model.json stores: every field in declaration order, ``compact``/``dtype`` only
    when set (so a freshly built architecture has exactly the keys it always had)."""
    unset = {k for k in ("compact", "dtype") if getattr(arch, k) is None}
    return arch.model_dump(exclude=unset)
