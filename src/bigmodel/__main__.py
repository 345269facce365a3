"""``python -m bigmodel`` (what torchrun runs with ``-m bigmodel``)."""

from bigmodel.cli import run

run()
