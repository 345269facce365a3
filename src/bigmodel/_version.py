"""The package version, importable without the root package (whose import loads the stages)."""

__version__ = "0.1.0"
