"""``bigmodel demo``: the whole pipeline on a real dataset, one module per step.

``run.py`` drives it (data, training, evaluation) and calls the later steps in order:
``compress.py``, ``serve.py`` (registry and server), ``online.py``, ``federated.py`` (with an
explanation). The demo sits above every stage, beside the CLI, so no stage imports another for it.
"""

from bigmodel.demo.run import demo

__all__ = ["demo"]
