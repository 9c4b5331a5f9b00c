"""Classification and representation learning: datasets, supervised training, self-supervised pre-training,
probes, calibration, robustness and explanations (see docs/classification.md)."""

from medimg.classify.data import ClassificationData, DatasetError, find_duplicates, load, load_folder, load_npz
from medimg.classify.predict import ClassifierModel, resolve_classifier, write_probabilities_csv
from medimg.classify.train import train_classifier

__all__ = [
    "ClassificationData",
    "ClassifierModel",
    "DatasetError",
    "find_duplicates",
    "load",
    "load_folder",
    "load_npz",
    "resolve_classifier",
    "train_classifier",
    "write_probabilities_csv",
]
