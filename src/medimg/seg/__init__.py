"""Self-configuring automatic segmentation: dataset -> fingerprint -> plan -> train -> predict.

>>> from medimg.seg import load_dataset, train_model, Predictor
"""

from medimg.seg.dataset import SegDataset, check_dataset, load_dataset
from medimg.seg.model import list_models, resolve_model, train_model, validate
from medimg.seg.plan import fingerprint, make_plan
from medimg.seg.predict import Predictor
from medimg.seg.train import Trainer, make_split, parse_duration

__all__ = [
    "Predictor",
    "SegDataset",
    "Trainer",
    "check_dataset",
    "fingerprint",
    "list_models",
    "load_dataset",
    "make_plan",
    "make_split",
    "parse_duration",
    "resolve_model",
    "train_model",
    "validate",
]
