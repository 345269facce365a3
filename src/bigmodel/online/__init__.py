"""Online learning: a deployed model keeps learning from labelled feedback.

``online(model, stream)`` runs it on a CSV or JSON-lines stream (``bigmodel online``); the server's
``POST /v2/models/{name}/feedback`` feeds the same ``OnlineLearner`` from live feedback
(``bigmodel serve --online``). ``bigmodel.online.policy`` documents when an alias moves.
"""

from bigmodel.online.detect import ADWIN, PageHinkley
from bigmodel.online.learner import OnlineLearner, Publisher
from bigmodel.online.policy import OnlineConfig, decide
from bigmodel.online.run import online

__all__ = ["ADWIN", "OnlineConfig", "OnlineLearner", "PageHinkley", "Publisher", "decide", "online"]
