"""Online learning: a deployed model keeps learning from labelled feedback.

``online(model, stream)`` runs it on a CSV or JSON-lines stream (``bigmodel online``); the server's
``POST /v2/models/{name}/feedback`` feeds the same ``OnlineLearner`` from live feedback
(``bigmodel serve --online``). ``bigmodel.online.policy`` documents when an alias moves.
"""

from typing import TYPE_CHECKING

from bigmodel.lazy import lazy_exports
from bigmodel.online.detect import ADWIN, PageHinkley
from bigmodel.online.policy import OnlineConfig, decide
from bigmodel.online.run import online

if TYPE_CHECKING:
    from bigmodel.online.learner import OnlineLearner, Publisher

# torch loads on first use: `bigmodel.online` is also the function `bigmodel` exports.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__, {"OnlineLearner": "bigmodel.online.learner", "Publisher": "bigmodel.online.learner"}
    )

__all__ = ["ADWIN", "OnlineConfig", "OnlineLearner", "PageHinkley", "Publisher", "decide", "online"]
