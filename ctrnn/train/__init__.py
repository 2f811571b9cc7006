"""Training: a validated configuration, a seeded and resumable training loop that writes a run
directory (metrics, checkpoints), evaluation of a finished run, multi-process training under
``torchrun``, and a scikit-learn style classifier over any model."""

from ._checkpoint import CheckpointError, RunDirectoryBusy, RunWriteError
from ._classifier import TimeSeriesClassifier
from ._config import SolverOptions, TrainConfig
from ._evaluate import Run, classification_report, evaluate, load_run
from ._trainer import METRICS_COLUMNS, TrainingWarning, TrainResult, read_metrics, train

__all__ = [
    "METRICS_COLUMNS",
    "CheckpointError",
    "Run",
    "RunDirectoryBusy",
    "RunWriteError",
    "SolverOptions",
    "TimeSeriesClassifier",
    "TrainConfig",
    "TrainResult",
    "TrainingWarning",
    "classification_report",
    "evaluate",
    "load_run",
    "read_metrics",
    "train",
]
