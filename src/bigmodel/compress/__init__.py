"""Compression: pruning, quantization, distillation, ONNX export, and the side-by-side report."""

from bigmodel.compress.export import export_onnx

__all__ = ["export_onnx"]
