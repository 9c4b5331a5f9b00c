"""Grey-level discretisation with a fixed bin width, as pyradiomics 3.0.1 does it.

Bins are equally spaced from 0 (edges at multiples of ``bin_width``), the lowest edge is the largest multiple of
``bin_width`` not above the ROI minimum, and every bin is half-open ``[lower, upper)``: grey level
``floor(x / W) - floor(min / W) + 1``. This differs from IBSI's fixed-bin-size method, which starts the bins at
the ROI minimum; pyradiomics documents the difference. Voxels outside the mask get level 0.
"""

from __future__ import annotations

import numpy as np


def bin_edges(values: np.ndarray, bin_width: float) -> np.ndarray:
    """The bin edges pyradiomics uses for ``values`` (the ROI's intensities) and ``bin_width``."""
    lo = float(np.min(values))
    hi = float(np.max(values))
    low = lo - (lo % bin_width)
    edges = np.arange(low, hi + 2 * bin_width, bin_width)
    if edges.size == 1:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def bin_image(image: np.ndarray, mask: np.ndarray, bin_width: float) -> np.ndarray:
    """Discretised grey levels (int, ``1..Ng`` inside ``mask``, 0 outside)."""
    out = np.zeros(image.shape, dtype=np.int64)
    vals = image[mask]
    out[mask] = np.digitize(vals, bin_edges(vals, bin_width))
    return out
