"""Small bundled sample data (see ``samples/LICENSE.md`` for sources and licences).

>>> from medimg.data import sample
>>> image_path, label_path = sample("hippocampus")
"""

from __future__ import annotations

from pathlib import Path

from medimg.errors import MedimgError

SAMPLES_DIR = Path(__file__).parent / "samples"

#: name -> (image file, label file, label names)
SAMPLES: dict[str, tuple[str, str, dict[int, str]]] = {
    "hippocampus": ("hippocampus_001_image.nii.gz", "hippocampus_001_label.nii.gz", {1: "anterior", 2: "posterior"}),
    "ct": ("ct_small_image.nii.gz", "ct_small_label.nii.gz", {}),
}


def sample(name: str = "hippocampus") -> tuple[Path, Path]:
    """Paths of a bundled sample's image and label files (``"hippocampus"`` MRI or ``"ct"``)."""
    if name not in SAMPLES:
        raise MedimgError(f"Unknown sample {name!r}; available: {', '.join(SAMPLES)}.")
    img, lab, _ = SAMPLES[name]
    return SAMPLES_DIR / img, SAMPLES_DIR / lab


def sample_label_names(name: str) -> dict[int, str]:
    """Class names of a sample's label map (empty when the ids are not named)."""
    if name not in SAMPLES:
        raise MedimgError(f"Unknown sample {name!r}; available: {', '.join(SAMPLES)}.")
    return dict(SAMPLES[name][2])
