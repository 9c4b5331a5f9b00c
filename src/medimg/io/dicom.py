"""DICOM image reading: folders with one or several series, single files, multi-frame (enhanced) objects.

A folder is scanned header-only (pydicom, ``stop_before_pixels``); files are grouped by SeriesInstanceUID.
Within a series, slices are sorted by their position along the slice normal ``row x column`` (the same
rule as GDCM/SimpleITK), the rescale slope/intercept of each slice is applied, and the slice spacing is
*measured*: a gap (missing slice) or irregular spacing raises :class:`DicomSeriesError` instead of
silently producing a wrong geometry, unless ``allow_irregular=True``, which interpolates the slices onto a
regular grid and records that in ``meta``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import CorruptFileError, DicomSeriesError
from medimg.image import Image

#: Relative deviation of a slice gap from the median gap that counts as irregular.
SLICE_GAP_RTOL = 0.05

_HEADER_TAGS = [
    "SOPClassUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "RescaleSlope",
    "RescaleIntercept",
    "BitsAllocated",
    "PixelRepresentation",
    "AcquisitionNumber",
    "EchoNumbers",
    "TemporalPositionIdentifier",
    "PatientID",
    "StudyDate",
]


@dataclass
class DicomSeries:
    """One DICOM series found in a folder (header information only)."""

    uid: str
    files: list[Path] = field(default_factory=list)
    modality: str = ""
    description: str = ""
    number: int | None = None
    rows: int = 0
    columns: int = 0
    frames: int = 0
    headers: list[Any] = field(default_factory=list, repr=False)

    @property
    def n_files(self) -> int:
        """Number of files in the series."""
        return len(self.files)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description."""
        return {
            "series_uid": self.uid,
            "modality": self.modality,
            "description": self.description,
            "series_number": self.number,
            "files": self.n_files,
            "frames": self.frames,
            "rows": self.rows,
            "columns": self.columns,
        }


def _read_header(path: Path) -> Any | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError):
        return None


def _candidate_files(folder: Path, recursive: bool) -> list[Path]:
    out: list[Path] = []
    walker = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    for root, dirs, files in walker:
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith(".") or f.upper() == "DICOMDIR":
                continue
            p = Path(root) / f
            if p.is_file():
                out.append(p)
    return out


def scan_folder(folder: str | Path, recursive: bool = True) -> list[DicomSeries]:
    """List the DICOM series in ``folder`` (header-only read), largest first.

    Files that are not DICOM are skipped. Raises :class:`DicomSeriesError` when no DICOM file is found.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DicomSeriesError(f"{str(root)!r} is not a folder.")
    files = _candidate_files(root, recursive)
    headers = [_read_header(f) for f in files]  # pure-Python parsing: threads only add GIL contention
    series: dict[str, DicomSeries] = {}
    for path, ds in zip(files, headers, strict=True):
        if ds is None or "SeriesInstanceUID" not in ds:
            continue
        uid = str(ds.SeriesInstanceUID)
        s = series.get(uid)
        if s is None:
            s = series[uid] = DicomSeries(
                uid=uid,
                modality=str(ds.get("Modality", "")),
                description=str(ds.get("SeriesDescription", "")),
                number=int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
                rows=int(ds.get("Rows", 0) or 0),
                columns=int(ds.get("Columns", 0) or 0),
            )
        s.files.append(path)
        s.headers.append(ds)
        s.frames += int(ds.get("NumberOfFrames", 1) or 1)
    if not series:
        raise DicomSeriesError(
            f"No DICOM files found in {str(root)!r} ({len(files)} files checked). Point to the folder that holds "
            "the .dcm files of one series."
        )
    return sorted(series.values(), key=lambda s: (-s.frames, s.uid))


def choose_series(found: Sequence[DicomSeries], series: str | None, folder: Path) -> DicomSeries:
    """Pick one series: by UID, a unique UID prefix or suffix (as ``medimg info`` shows it, a trailing
    ellipsis is ignored), ``"largest"``, or the only one present."""
    images = [s for s in found if s.modality not in ("SEG", "RTSTRUCT", "SR", "PR", "KO", "RTPLAN", "RTDOSE")]
    short = short_uids([s.uid for s in found])
    if series is None:
        if len(images) == 1:
            return images[0]
        if not images and len(found) == 1:
            return found[0]
        listing = "\n".join(
            f"  {short[s.uid]:24s} {s.modality:4s} {s.frames:5d} frames  {s.description!r}  ({s.uid})" for s in found
        )
        raise DicomSeriesError(
            f"{str(folder)!r} holds {len(found)} DICOM series; say which one to read with series=UID (CLI: "
            f"--series UID; a unique prefix or suffix such as the short form listed first is enough) or "
            f"series='largest':\n{listing}"
        )
    if series == "largest":
        return (images or list(found))[0]
    key = series.strip().rstrip("\u2026.").strip()  # "1.2.840.1138…" / "1.2.840.1138..." as a table shows it
    exact = [s for s in found if s.uid == series.strip()]
    matches = exact or ([s for s in found if s.uid.startswith(key) or s.uid.endswith(key)] if key else [])
    if len(matches) != 1:
        listing = ", ".join(f"{short[s.uid]} ({s.uid})" for s in found)
        raise DicomSeriesError(
            f"Series {series!r} {'is ambiguous' if matches else 'not found'} in {str(folder)!r}; give more of the UID "
            f"(a unique prefix or suffix is enough). Available: {listing}"
        )
    return matches[0]


def short_uids(uids: Sequence[str], min_len: int = 12) -> dict[str, str]:
    """Shortest unique prefix (at least ``min_len`` characters, ending with an ellipsis when shortened) of each
    UID; each one is accepted as-is by :func:`choose_series` (CLI ``--series``)."""
    out: dict[str, str] = {}
    for u in uids:
        others = [o for o in uids if o != u]
        n = min(min_len, len(u))
        while n < len(u) and any(o.startswith(u[:n]) for o in others):
            n += 1
        out[u] = u if n >= len(u) else u[:n] + "\u2026"
    return out


def _floats(value: Any, n: int, what: str, path: Path) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise CorruptFileError(f"{str(path)!r}: invalid {what} {value!r}.") from e
    if arr.size != n:
        raise CorruptFileError(f"{str(path)!r}: {what} should have {n} values, has {arr.size}.")
    return arr


def _decode(path: Path) -> tuple[Any, np.ndarray]:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        return ds, ds.pixel_array
    except Exception as e:  # pydicom/pylibjpeg raise many exception types for broken pixel data
        raise CorruptFileError(f"{str(path)!r}: cannot decode pixel data ({type(e).__name__}: {e}).") from e


def _decode_gdcm(path: Path) -> np.ndarray:
    """Decode one compressed single-frame slice with GDCM (through SimpleITK); rescale is applied by GDCM."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        return sitk.GetArrayFromImage(reader.Execute())[0]
    except RuntimeError as e:
        raise CorruptFileError(f"{str(path)!r}: cannot decode pixel data ({str(e).strip().splitlines()[-1]}).") from e


def _decode_stack(files: list[Path], headers: list[Any], source: str) -> np.ndarray:
    """Decode and rescale the slices of a series, in the given order, as (rows, cols[, samples], slices).

    Compressed greyscale slices are decoded by GDCM in a thread pool (it releases the GIL and is ~1.5x faster
    than pylibjpeg on JPEG 2000); everything else by pydicom.
    """
    workers = min(len(files), max(1, os.cpu_count() or 1) + 1, 8)
    compressed = all(h.file_meta.TransferSyntaxUID.is_compressed for h in headers if hasattr(h, "file_meta"))
    greyscale = all(int(h.get("SamplesPerPixel", 1) or 1) == 1 for h in headers)
    if compressed and greyscale:
        first = _decode_gdcm(files[0])
        out = np.empty((*first.shape, len(files)), dtype=first.dtype)
        out[..., 0] = first

        def fill(i: int) -> None:
            px = _decode_gdcm(files[i])
            if px.shape != first.shape:
                raise DicomSeriesError(f"Series {source!r}: slices have different shapes {first.shape}, {px.shape}.")
            out[..., i] = px

        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(fill, range(1, len(files))))
            return out.astype(_rescaled_dtype(out, headers), copy=False)
        except CorruptFileError:
            pass  # fall back to pydicom's decoders below
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            decoded = list(pool.map(_decode, files))
    else:
        decoded = [_decode(f) for f in files]
    pixels = [p for _, p in decoded]
    _check_shapes(pixels, source)
    return _rescale(pixels, [d for d, _ in decoded])


def _check_shapes(pixels: list[np.ndarray], source: str) -> None:
    shapes = {p.shape for p in pixels}
    if len(shapes) > 1:
        raise DicomSeriesError(f"Series {source!r}: decoded slices have different shapes {sorted(shapes)}.")


def _rescaled_dtype(values: np.ndarray, headers: list[Any]) -> np.dtype[Any]:
    """int16 when the rescaled values are integers that fit, else int32 / float32 (medimg's rule for all decoders)."""
    slopes = [float(h.get("RescaleSlope", 1) or 1) for h in headers]
    inters = [float(h.get("RescaleIntercept", 0) or 0) for h in headers]
    if not all(v == round(v) for v in slopes + inters):
        return np.dtype(np.float32)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    return np.dtype(np.int16 if lo >= -32768 and hi <= 32767 else np.int32)


def _rescale(pixels: list[np.ndarray], datasets: list[Any]) -> np.ndarray:
    slopes = np.array([float(d.get("RescaleSlope", 1) or 1) for d in datasets])
    inters = np.array([float(d.get("RescaleIntercept", 0) or 0) for d in datasets])
    stack = np.stack(pixels, axis=-1)  # (rows, cols[, samples], slices)
    if np.all(slopes == 1) and np.all(inters == 0):
        return stack
    if np.all(slopes == np.round(slopes)) and np.all(inters == np.round(inters)):
        shape = (1,) * (stack.ndim - 1) + (-1,)
        out = stack.astype(np.int32) * slopes.astype(np.int32).reshape(shape) + inters.astype(np.int32).reshape(shape)
        return out.astype(_rescaled_dtype(out, datasets), copy=False)
    shape = (1,) * (stack.ndim - 1) + (-1,)
    return stack.astype(np.float32) * slopes.astype(np.float32).reshape(shape) + inters.astype(np.float32).reshape(
        shape
    )


def read_series_files(
    files: Sequence[Path], allow_irregular: bool = False, source: str = "", headers: Sequence[Any] | None = None
) -> Image:
    """Read single-frame DICOM files of one series into a 3D :class:`Image` (LPS, (x, y, z)).

    ``headers`` (from :func:`scan_folder`) avoids reading the headers a second time.
    """
    if headers is None or len(headers) != len(files):
        headers = [_read_header(Path(f)) for f in files]
    bad = [str(f) for f, h in zip(files, headers, strict=True) if h is None]
    if bad:
        raise CorruptFileError(f"Not readable as DICOM: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}.")
    hdrs: list[Any] = list(headers)
    first = hdrs[0]
    for attr in ("Rows", "Columns"):
        values = {int(h.get(attr, 0) or 0) for h in hdrs}
        if len(values) > 1:
            raise DicomSeriesError(
                f"Series {source!r} mixes images of different {attr.lower()} {sorted(values)}; it is not one volume. "
                "Split it by size or pick the files of one volume."
            )
    has_geom = all("ImagePositionPatient" in h and "ImageOrientationPatient" in h for h in hdrs)
    if not has_geom:
        if len(files) == 1:
            return _read_single_2d(Path(files[0]))
        raise DicomSeriesError(
            f"Series {source!r} has {len(files)} images without ImagePositionPatient/ImageOrientationPatient, so "
            "they cannot be stacked into a volume with known geometry. Read the files one by one."
        )
    iops = np.array(
        [
            _floats(h.ImageOrientationPatient, 6, "ImageOrientationPatient", Path(f))
            for h, f in zip(hdrs, files, strict=True)
        ]
    )
    if np.max(np.abs(iops - iops[0])) > 1e-3:
        raise DicomSeriesError(
            f"Series {source!r} mixes slice orientations (e.g. a localizer with axial slices); it is not one volume."
        )
    row_cos, col_cos = iops[0][:3], iops[0][3:]
    row_cos = row_cos / np.linalg.norm(row_cos)
    col_cos = col_cos / np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)
    positions = np.array(
        [_floats(h.ImagePositionPatient, 3, "ImagePositionPatient", Path(f)) for h, f in zip(hdrs, files, strict=True)]
    )
    proj = positions @ normal
    order = np.argsort(proj, kind="stable")
    proj_sorted = proj[order]
    files_sorted = [Path(files[i]) for i in order]
    meta: dict[str, Any] = {
        "source": source,
        "format": "dicom",
        "modality": str(first.get("Modality", "")),
        "series_uid": str(first.get("SeriesInstanceUID", "")),
        "study_uid": str(first.get("StudyInstanceUID", "")),
        "series_description": str(first.get("SeriesDescription", "")),
    }
    ps = first.get("PixelSpacing") or first.get("ImagerPixelSpacing")
    if ps:
        sy, sx = (float(v) for v in ps)  # DICOM: row spacing (y) then column spacing (x)
    else:
        sy = sx = 1.0
        meta["spacing_known"] = False
    gaps = np.diff(proj_sorted)
    if len(files) > 1 and np.any(gaps < 1e-4):
        n_dup = int(np.sum(gaps < 1e-4))
        raise DicomSeriesError(
            f"Series {source!r}: {n_dup} slices share a position with another slice, so the series holds several "
            "volumes (echoes, time points or acquisitions) or duplicated files. Separate them (e.g. by "
            "AcquisitionNumber/EchoNumbers/TemporalPositionIdentifier) before reading."
        )
    if len(files) > 1:
        dz = float(np.median(gaps))
        irregular = np.abs(gaps - dz) > SLICE_GAP_RTOL * dz
    else:
        dz = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
        irregular = np.zeros(0, dtype=bool)
    if np.any(irregular) and not allow_irregular:
        i = int(np.argmax(np.abs(gaps - dz)))
        gap = float(gaps[i])
        missing = round(gap / dz) - 1
        hint = f" -- about {missing} missing slice(s)" if missing >= 1 and abs(gap / dz - round(gap / dz)) < 0.1 else ""
        raise DicomSeriesError(
            f"Series {source!r} has irregular slice spacing: the gap between slices {i} and {i + 1} (sorted by "
            f"position, files {files_sorted[i].name!r} and {files_sorted[i + 1].name!r}) is {gap:.4g} mm where the "
            f"usual gap is {dz:.4g} mm{hint}. A volume built from it would have wrong geometry. Find the missing "
            "files, or read with allow_irregular=True (CLI: --allow-irregular) to interpolate onto a regular grid."
        )
    stack = _decode_stack(files_sorted, [hdrs[i] for i in order], source)  # (rows, cols[, samples], slices)
    # -> (x=cols, y=rows, z[, samples])
    arr = np.swapaxes(stack, 0, 1) if stack.ndim == 3 else stack.transpose(1, 0, 3, 2)
    if np.any(irregular):
        arr, dz = _regularise(arr, proj_sorted - proj_sorted[0], dz)
        meta["irregular_slices_interpolated"] = True
    meta["photometric"] = str(first.get("PhotometricInterpretation", ""))
    direction = np.stack([row_cos, col_cos, normal], axis=1)
    return Image(arr, (sx, sy, dz), positions[order[0]], direction, meta)


def _regularise(arr: np.ndarray, z: np.ndarray, dz: float) -> tuple[np.ndarray, float]:
    """Linearly interpolate slices at positions ``z`` (mm, ascending, axis 2) onto a grid of step ``dz``."""
    n = int(np.floor(z[-1] / dz + 1e-6)) + 1
    target = np.arange(n) * dz
    hi = np.clip(np.searchsorted(z, target, side="right"), 1, len(z) - 1)
    lo = hi - 1
    w = ((target - z[lo]) / (z[hi] - z[lo])).astype(np.float32)
    shape = (1, 1, -1) + (1,) * (arr.ndim - 3)
    a = arr.astype(np.float32)
    out = a[:, :, lo] * (1 - w.reshape(shape)) + a[:, :, hi] * w.reshape(shape)
    if np.issubdtype(arr.dtype, np.integer):
        out = np.round(out).astype(arr.dtype)
    return out, dz


def _read_single_2d(path: Path) -> Image:
    """A single DICOM image without patient geometry (DX/CR/US/secondary capture) as a 2D image."""
    ds, px = _decode(path)
    stack = _rescale([px], [ds])[..., 0]
    arr = np.swapaxes(stack, 0, 1)
    ps = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    meta: dict[str, Any] = {
        "source": str(path),
        "format": "dicom",
        "modality": str(ds.get("Modality", "")),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
    }
    if ps:
        sy, sx = (float(v) for v in ps)
        return Image(arr, (sx, sy), None, None, meta)
    return Image(arr, None, None, None, meta, ndim=2)


def read_dicom_file(path: str | Path, allow_irregular: bool = False) -> Image:
    """Read one DICOM file: a SEG object, a multi-frame (enhanced) image or a single slice."""
    p = Path(path)
    hdr = _read_header(p)
    if hdr is None:
        raise CorruptFileError(f"{str(p)!r} is not a readable DICOM file.")
    if str(hdr.get("Modality", "")) == "SEG":
        from medimg.io.dicom_seg import read_dicom_seg

        return read_dicom_seg(p)
    if int(hdr.get("NumberOfFrames", 1) or 1) > 1:
        return _read_multiframe(p)
    return read_series_files([p], allow_irregular, source=str(p))


def _read_multiframe(path: Path) -> Image:
    """Multi-frame image: highdicom's volume when the frames have patient geometry, else SimpleITK's reader."""
    import highdicom as hd

    try:
        vol = hd.imread(str(path)).get_volume()
    except Exception:
        from medimg.io.metaimage import read_with_sitk

        img = read_with_sitk(path, "dicom")
        img.meta["note"] = "multi-frame image without patient geometry: frames stacked as z"
        spacing = _multiframe_pixel_spacing(path)
        if spacing is None:
            # GDCM reports 1 mm when the file gives no spacing: say it is unknown instead of inventing it
            img.spacing = (1.0,) * img.ndim
            img.meta["spacing_known"] = False
            img.meta["note"] += "; no pixel spacing in the file (spacing unknown, 1 mm placeholder)"
        else:
            img.meta["spacing_known"] = True
        return img
    img = volume_to_image(vol, {"source": str(path), "format": "dicom"})
    return img


def _multiframe_pixel_spacing(path: Path) -> tuple[float, float] | None:
    """(row, column) PixelSpacing of a multi-frame file: shared or first per-frame Pixel Measures, or the
    top-level attribute; None when the file does not give it."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None
    candidates: list[Any] = [ds]
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(seq)
        if groups:
            pm = groups[0].get("PixelMeasuresSequence")
            if pm:
                candidates.append(pm[0])
    for item in candidates:
        ps = item.get("PixelSpacing") or item.get("ImagerPixelSpacing")
        if ps is not None and len(ps) == 2:
            try:
                sy, sx = float(ps[0]), float(ps[1])
            except (TypeError, ValueError):
                continue
            if sy > 0 and sx > 0:
                return sy, sx
    return None


def volume_to_image(vol: Any, meta: dict[str, Any]) -> Image:
    """Convert a highdicom ``Volume`` ((slice, row, column[, channel]) + affine) to a medimg Image, with the
    slice axis pointing along ``row x column`` like a series read from files."""
    arr = np.asarray(vol.array)
    arr = np.swapaxes(arr, 0, 2)  # (col, row, slice[, ch]) = (x, y, z)
    aff = np.asarray(vol.affine, dtype=np.float64)
    m = aff[:3, :3][:, [2, 1, 0]]
    origin = aff[:3, 3].copy()
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    if np.dot(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2]) < 0:
        origin = origin + (arr.shape[2] - 1) * m[:, 2]
        direction[:, 2] *= -1
        arr = arr[:, :, ::-1]
    return Image(np.ascontiguousarray(arr), spacing, origin, direction, meta)


def read_dicom(
    path: str | Path, series: str | None = None, allow_irregular: bool = False, recursive: bool = True
) -> Image:
    """Read a DICOM folder (one series, chosen with ``series``) or a single DICOM file."""
    p = Path(path)
    if p.is_file():
        return read_dicom_file(p, allow_irregular)
    found = scan_folder(p, recursive)
    chosen = choose_series(found, series, p)
    if chosen.modality == "SEG" or (len(chosen.files) == 1 and chosen.frames > 1):
        if len(chosen.files) > 1:
            raise DicomSeriesError(f"Series {chosen.uid} has several multi-frame/SEG files; read them one by one.")
        return read_dicom_file(chosen.files[0], allow_irregular)
    img = read_series_files(chosen.files, allow_irregular, source=str(p), headers=chosen.headers)
    img.meta["source"] = str(p)
    return img
