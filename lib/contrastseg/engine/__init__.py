"""Training and evaluation engine."""

from contrastseg.engine.evaluate import evaluate, predict
from contrastseg.engine.train import NonFiniteLossError, load_trained_model, read_log, train

__all__ = ["train", "evaluate", "predict", "load_trained_model", "read_log", "NonFiniteLossError"]
