"""Training entry points (``train_net``, ``demo``) and inference for users (``Predictor``, ``VideoPredictor``)."""
from segx.engine.predictor import Predictor, VideoPredictor  # noqa: F401
