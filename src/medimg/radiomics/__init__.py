"""medimg's own radiomics: pyradiomics-compatible features (first order, GLCM, GLRLM, GLSZM, NGTDM, GLDM) on
original, LoG and wavelet images, vectorised with NumPy/SciPy (no pyradiomics, no PyWavelets, no SimpleITK).

:func:`extract` runs the whole pipeline on one ``(z, y, x)`` image and mask; :func:`frd_v1_settings` and
:func:`frd_v0_settings` give the configurations of frd-score's FRD v1 and v0.
"""

from __future__ import annotations

from medimg.radiomics.extractor import RadiomicsSettings, extract, frd_v0_settings, frd_v1_settings

__all__ = ["RadiomicsSettings", "extract", "frd_v0_settings", "frd_v1_settings"]
