"""Online learning: a deployed model keeps learning from labelled feedback.

``online(model, stream)`` runs it on a CSV or JSON-lines stream (``bigmodel online``); the server's
``POST /v2/models/{name}/feedback`` feeds the same ``OnlineLearner`` from live feedback
(``bigmodel serve --online``). ``bigmodel.online_learning.policy`` documents when an alias moves.
"""

from typing import TYPE_CHECKING

from bigmodel.lazy import lazy_exports
from bigmodel.online_learning.detect import ADWIN, PageHinkley
from bigmodel.online_learning.policy import OnlineConfig, decide
from bigmodel.online_learning.run import online

if TYPE_CHECKING:
    from bigmodel.online_learning.learner import OnlineLearner, Publisher

# torch loads on first use: `bigmodel.online` (this function) keeps `import bigmodel` light.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "OnlineLearner": "bigmodel.online_learning.learner",
            "Publisher": "bigmodel.online_learning.learner",
        },
    )

__all__ = ["ADWIN", "OnlineConfig", "OnlineLearner", "PageHinkley", "Publisher", "decide", "online"]
