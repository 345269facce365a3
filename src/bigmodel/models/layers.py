"""Compact layer types that compression leaves in a model, and how an architecture dict names them.

Each is a plain ``nn.Module`` whose state dict holds only safetensors-friendly tensors, so a
compressed model directory loads through the same ``build_model(arch)`` + ``load_state_dict`` as any
other. ``arch["compact"]`` maps a module path to its kind, e.g. ``{"net.0": {"kind": "sparse"},
"net.2": {"kind": "int8", "static": false}}``; ``apply_layers`` swaps those modules in.

- ``SparseLinear``: a dense ``nn.Linear`` in memory (fast dense kernels, trainable); on disk a
  bitmask of the non-zeros plus their values: at 90% sparsity about 1/7 of the dense bytes.
- ``Int8Linear``: weights int8, symmetric per output channel; activations quantized to int8 per row
  at run time (dynamic) or with one calibrated scale (static); int8 x int8 -> int32 on ATen's
  ``_int_mm`` (the GEMM torchao's int8 path runs on CPU). An optional SmoothQuant vector moves
  activation outliers into the weights before quantizing. ``packed`` layers (language models) run
  on FBGEMM's dynamic int8 linear instead, from the same stored bytes (see ``Int8Linear``).
- ``MatMulLinear``: the float twin of an ``Int8Linear`` (dequantized weight as ``x @ W_t + b``),
  exported to ONNX so that ONNX Runtime's quantizer finds exactly the same int8 weights.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from bigmodel.errors import BigModelError

QMAX = 127  # symmetric int8: [-127, 127], as ONNX Runtime uses for symmetric weights


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A flat bool tensor -> uint8 bytes, 8 flags per byte (little-endian bit order)."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, flat.new_zeros(pad)]).view(-1, 8)  # (n/8, 8)
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)
    return (flat * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``n`` flags as a bool tensor."""
    shifts = torch.arange(8, dtype=torch.uint8)
    return ((packed.reshape(-1, 1) >> shifts) & 1).reshape(-1)[:n].bool()


class SparseLinear(nn.Linear):
    """``nn.Linear`` whose model-directory weights are ``weight_mask`` (packed bits) +
    ``weight_values`` (the non-zeros in row-major order) + ``bias`` (see ``compact_state``); it
    loads those back to the dense weight. In memory, and in ``state_dict()`` (so training,
    DDP and checkpoints see an ordinary Linear), it is dense."""

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        mk, vk = prefix + "weight_mask", prefix + "weight_values"
        if mk in state_dict and vk in state_dict:
            mask = unpack_bits(state_dict.pop(mk), self.weight.numel()).view_as(self.weight)
            values = state_dict.pop(vk)
            if int(mask.sum()) != values.numel():
                error_msgs.append(
                    f"{prefix}weight: mask has {int(mask.sum())} ones but {values.numel()} values"
                )
                return
            # built where the values are (a module on the meta device gets real weights, assigned)
            dense = torch.zeros(self.weight.shape, dtype=self.weight.dtype, device=values.device)
            dense[mask.to(values.device)] = values.to(dense.dtype)
            state_dict[prefix + "weight"] = dense
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def compact_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every ``SparseLinear`` weight as bitmask + non-zero values:
    what a model directory stores (``artifacts.write_model_dir(..., state=...)``)."""
    state = dict(model.state_dict())
    for path, m in model.named_modules():
        if isinstance(m, SparseLinear):
            prefix = f"{path}." if path else ""
            w = state.pop(prefix + "weight").detach()
            nz = w != 0
            state[prefix + "weight_mask"] = pack_bits(nz)
            state[prefix + "weight_values"] = w[nz].contiguous()
    return state


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float -> ``qweight`` (in, out) int8 and ``scale`` (out,): symmetric per channel.

    The (in, out) layout is what ``_int_mm`` and ONNX's MatMulInteger take, so one byte layout
    serves both runtimes."""
    scale = (w.detach().abs().amax(dim=1) / QMAX).clamp(min=1e-12).float()  # (out,)
    q = torch.round(w.detach().float() / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q.t().contiguous(), scale


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with int8 weights and int8 activations (see the module docstring).

    ``packed``: run on FBGEMM's dynamic int8 linear (``quantized::linear_dynamic``; activations
    quantized per tensor, 7 bits so that no CPU's int16 pair sums saturate). The weights it packs
    are exactly the stored int8 ones. Generating text one token at a time, on a 2-core AMD EPYC, all
    25 layers of a 6-layer width-384 LM took 0.89 ms on it against 15.5 ms on ``_int_mm`` (which
    seems to re-read its weight in a slow layout every call) and 23 ms in float32."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        static: bool = False,
        smooth: bool = False,
        packed: bool = False,
    ):
        super().__init__()
        self.in_features, self.out_features, self.static = in_features, out_features, static
        self.packed = packed and not static
        self._fbgemm: tuple[tuple[int, ...], Any] | None = None  # (what it was packed from, packed)
        self.qweight: torch.Tensor
        self.scale: torch.Tensor
        self.bias: torch.Tensor
        self.register_buffer("qweight", torch.zeros(in_features, out_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features))
        self.smooth: torch.Tensor | None  # (in,) multiplier applied to x first (SmoothQuant)
        self.input_scale: torch.Tensor | None  # () calibrated activation scale (static)
        self.register_buffer("smooth", torch.ones(in_features) if smooth else None)
        self.register_buffer("input_scale", torch.ones(()) if static else None)

    @classmethod
    def from_linear(
        cls,
        lin: nn.Linear,
        *,
        smooth: torch.Tensor | None = None,
        input_scale: float | None = None,
        packed: bool = False,
    ) -> Int8Linear:
        """Quantize a Linear. ``smooth`` (in,) is SmoothQuant's s: x/s times s*W is the same product
        with the activation outliers moved into the weights, where per-channel scales absorb them."""
        m = cls(
            lin.in_features,
            lin.out_features,
            static=input_scale is not None,
            smooth=smooth is not None,
            packed=packed,
        )
        w = lin.weight.detach().float()
        if smooth is not None:
            w = w * smooth[None, :]
            m.smooth.copy_(1.0 / smooth)  # type: ignore[union-attr]
        m.qweight, m.scale = quantize_weight(w)
        if lin.bias is not None:
            m.bias.copy_(lin.bias.detach())
        if input_scale is not None:
            m.input_scale.fill_(input_scale)  # type: ignore[union-attr]
        return m

    def dequantized(self) -> torch.Tensor:
        """The float weight the int8 one stands for, (in, out)."""
        return self.qweight.float() * self.scale[None, :]

    def _packed_weight(self) -> Any:
        """FBGEMM's packed form of the stored int8 weight, made on first use and again whenever the
        weight, scales or bias were replaced or written to (a load_state_dict, say)."""
        version = tuple(v for t in (self.qweight, self.scale, self.bias) for v in (id(t), t._version))
        if self._fbgemm is None or self._fbgemm[0] != version:
            with warnings.catch_warnings():  # quantized tensors are deprecated; only the packer takes one
                warnings.simplefilter("ignore")
                w = torch._make_per_channel_quantized_tensor(
                    self.qweight.t().contiguous(),
                    self.scale.double(),
                    torch.zeros(self.out_features, dtype=torch.long),
                    0,
                )
            self._fbgemm = (version, _prepack(w, self.bias.float()))
        return self._fbgemm[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float()  # (M, in)
        if self.smooth is not None:
            x2 = x2 * self.smooth
        if self.packed and x2.device.type == "cpu" and x2.shape[0] > 0:
            y = torch.ops.quantized.linear_dynamic(x2.contiguous(), self._packed_weight(), True)
            return y.reshape(*lead, self.out_features).to(x.dtype)
        # In-place steps where a new tensor is not needed: generating one token at a time (M = 1),
        # allocations and dispatch, not the int8 GEMM, were most of this layer's time (same results).
        if self.input_scale is not None:
            s = self.input_scale.expand(x2.shape[0], 1)
        else:
            s = x2.abs().amax(dim=1, keepdim=True).div_(QMAX).clamp_(min=1e-12)  # (M, 1) per row
        xq = x2.div(s).round_().clamp_(-QMAX, QMAX).to(torch.int8)
        if xq.shape[0] == 0:
            return x.new_zeros(*lead, self.out_features)
        y = torch._int_mm(xq, self.qweight).float()  # (M, out), from int32
        y.mul_(s).mul_(self.scale).add_(self.bias)
        return y.reshape(*lead, self.out_features).to(x.dtype)


def _prepack(w: torch.Tensor, bias: torch.Tensor) -> Any:
    """Pack for FBGEMM itself where it exists: the default "x86" engine packs for a kernel that ran
    2.5x slower at 16 rows here. The packed weight keeps its kernel whatever the engine later."""
    engines = torch.backends.quantized.supported_engines
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm" if "fbgemm" in engines else old
    try:
        return torch.ops.quantized.linear_prepack(w, bias)
    finally:
        torch.backends.quantized.engine = old


class MatMulLinear(nn.Module):
    """A float layer in ONNX MatMul layout for export: ``(x * smooth) @ weight_t + bias``; the float
    twin of an ``Int8Linear`` (``from_int8``) or of a smoothed ``nn.Linear``."""

    def __init__(self, weight_t: torch.Tensor, bias: torch.Tensor, smooth: torch.Tensor | None = None):
        super().__init__()
        self.weight_t: torch.Tensor
        self.bias: torch.Tensor
        self.smooth: torch.Tensor | None
        self.register_buffer("weight_t", weight_t.detach().float().contiguous())  # (in, out)
        self.register_buffer("bias", bias.detach().float().clone())
        self.register_buffer("smooth", None if smooth is None else smooth.detach().float().clone())

    @classmethod
    def from_int8(cls, q: Int8Linear) -> MatMulLinear:
        return cls(q.dequantized(), q.bias, q.smooth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x * self.smooth
        return torch.matmul(x, self.weight_t) + self.bias


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, new)


def apply_layers(model: nn.Module, layers: dict[str, dict[str, Any]]) -> nn.Module:
    """Swap the modules ``arch["compact"]`` names for their compact kinds (weights are loaded later)."""
    for path, spec in layers.items():
        try:
            old = model.get_submodule(path)
        except AttributeError:
            raise BigModelError(f"architecture names layer '{path}', which the model does not have") from None
        if not isinstance(old, nn.Linear):
            raise BigModelError(f"layer '{path}' is {type(old).__name__}, not Linear: cannot make it {spec}")
        kind = spec.get("kind")
        new: nn.Module
        if kind == "sparse":
            new = SparseLinear(old.in_features, old.out_features, bias=old.bias is not None)
        elif kind == "int8":
            new = Int8Linear(
                old.in_features,
                old.out_features,
                static=bool(spec.get("static", False)),
                smooth=bool(spec.get("smooth", False)),
                packed=bool(spec.get("packed", False)),
            )
        else:
            raise BigModelError(f"layer '{path}': unknown kind {kind!r} (known: sparse, int8)")
        _set_module(model, path, new)
    return model


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at ``path`` (e.g. ``net.2``) in ``model``."""
    _set_module(model, path, new)


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every Linear (incl. SparseLinear) by module path, in order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def set_dtype(model: nn.Module, dtype: str) -> nn.Module:
    """Run a model in float16/bfloat16: weights cast, inputs cast on the way in, logits back to
    float32 on the way out (hooks, so the state dict keys stay those of the float model)."""
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if dt is None:
        raise BigModelError(f"unknown dtype {dtype!r} (known: float16, bfloat16)")
    model.to(dt)

    def cast_in(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.to(dt) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def cast_out(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
        return out.float() if torch.is_tensor(out) else out

    model.register_forward_pre_hook(cast_in)
    model.register_forward_hook(cast_out)
    return model


__all__ = [
    "Int8Linear",
    "MatMulLinear",
    "SparseLinear",
    "apply_layers",
    "compact_state",
    "linear_layers",
    "pack_bits",
    "quantize_weight",
    "replace_module",
    "set_dtype",
    "unpack_bits",
]
