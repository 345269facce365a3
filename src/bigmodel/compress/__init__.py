"""Compression: pruning, quantization, distillation, ONNX export, and the side-by-side report."""

from bigmodel.compress.distill import distill
from bigmodel.compress.export import export_onnx
from bigmodel.compress.prune import prune
from bigmodel.compress.quantize import quantize
from bigmodel.compress.report import report as compression_report

__all__ = ["compression_report", "distill", "export_onnx", "prune", "quantize"]
