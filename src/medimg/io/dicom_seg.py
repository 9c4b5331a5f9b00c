"""DICOM Segmentation objects (SEG) in and out, through highdicom.

Reading gives a :class:`LabelMap` whose values are the segment numbers (or the original label values when
medimg wrote the object), with segment labels as class names. Overlapping segments cannot live in one label
map: the higher segment number wins and ``meta["overlap_voxels"]`` counts the voxels concerned (a warning
is issued). FRACTIONAL segments are thresholded at 0.5.

Writing needs the source image series the labels were drawn on (``reference``): the label map must share its
voxel grid (resample it first otherwise) and the SEG references every source instance, so that viewers
(3D Slicer, OHIF, ...) place it on the images. Segments are BINARY, one per label value present, with the
label map's colour (or medimg's label palette), a SNOMED CT property type for known anatomy and lesion names
(:func:`segment_codes`; anything else is the generic "Tissue"), and algorithm type AUTOMATIC with the
algorithm's name and version when a model made them, MANUAL otherwise. Frames where a segment has no voxel
are not written.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import CorruptFileError, DicomSeriesError, LabelError
from medimg.image import Image, LabelMap, check_same_geometry
from medimg.report_colors import label_color

#: Private block (group, creator, element) holding the source series' voxel grid as JSON, so that a SEG without
#: empty frames reads back on the full grid.
GRID_GROUP, GRID_CREATOR, GRID_ELEMENT = 0x0009, "medimg", 0x01

#: TrackingID prefix under which medimg stores each segment's original label value.
TRACKING_PREFIX = "medimg label "

#: Normalised class name (lower case, words) -> pydicom ``codes.SCT`` attribute, for anatomy.
_ANATOMY = {
    "liver": "Liver",
    "spleen": "Spleen",
    "kidney": "Kidney",
    "lung": "Lung",
    "heart": "Heart",
    "hippocampus": "Hippocampus",
    "brain": "Brain",
    "cerebellum": "Cerebellum",
    "pancreas": "Pancreas",
    "stomach": "Stomach",
    "gallbladder": "Gallbladder",
    "gall bladder": "Gallbladder",
    "aorta": "Aorta",
    "esophagus": "Esophagus",
    "oesophagus": "Esophagus",
    "trachea": "Trachea",
    "prostate": "Prostate",
    "urinary bladder": "Bladder",
    "bladder": "Bladder",
    "colon": "Colon",
    "rectum": "Rectum",
    "duodenum": "Duodenum",
    "small bowel": "SmallIntestine",
    "small intestine": "SmallIntestine",
    "large intestine": "LargeIntestine",
    "adrenal gland": "AdrenalGland",
    "thyroid": "Thyroid",
    "thyroid gland": "Thyroid",
    "vertebra": "Vertebra",
    "rib": "Rib",
    "sternum": "Sternum",
    "femur": "Femur",
    "humerus": "Humerus",
    "scapula": "Scapula",
    "clavicle": "Clavicle",
    "clavicula": "Clavicle",
    "sacrum": "Sacrum",
    "skull": "Skull",
    "mandible": "Mandible",
    "spinal cord": "SpinalCord",
    "inferior vena cava": "InferiorVenaCava",
    "superior vena cava": "SuperiorVenaCava",
    "pulmonary artery": "PulmonaryArtery",
    "portal vein": "PortalVein",
    "common carotid artery": "CommonCarotidArtery",
    "left ventricle": "LeftVentricle",
    "right ventricle": "RightVentricle",
    "eye": "Eye",
    "larynx": "Larynx",
    "tongue": "Tongue",
    "parotid gland": "ParotidGland",
    "breast": "Breast",
    "uterus": "Uterus",
    "ovary": "Ovary",
    "skin": "Skin",
    "muscle": "Muscle",
    "bone": "Bone",
    "fat": "Fat",
}
#: Normalised class name -> ``codes.SCT`` attribute, for abnormal structures.
_ABNORMAL = {
    "lesion": "Lesion",
    "tumor": "Neoplasm",
    "tumour": "Neoplasm",
    "neoplasm": "Neoplasm",
    "nodule": "Nodule",
    "cyst": "Cyst",
    "mass": "Mass",
    "edema": "Edema",
    "oedema": "Edema",
    "necrosis": "Necrosis",
    "hemorrhage": "Hemorrhage",
    "haemorrhage": "Hemorrhage",
}
#: Words that qualify a structure without changing what it is (side, numbering, vertebral level).
_QUALIFIERS = re.compile(r"^(left|right|l|r|lt|rt|bilateral|[0-9]+|[cltsCLTS][0-9]{1,2})$")
_PLURALS = {"vertebrae": "vertebra", "kidneys": "kidney", "lungs": "lung", "ribs": "rib", "lesions": "lesion"}


def _normalise(name: str) -> str:
    words = re.split(r"[\s_\-/.,()]+", name.strip())
    kept = [_PLURALS.get(w.lower(), w.lower()) for w in words if w and not _QUALIFIERS.match(w)]
    return " ".join(kept)


def segment_codes(name: str) -> tuple[Any, Any]:
    """(category, type) SNOMED CT codes for a class name.

    ``"kidney_right"`` -> (Anatomical Structure, Kidney); ``"liver tumour"`` is not a liver -> (Morphologically
    Abnormal Structure, Neoplasm). Only whole names are coded (side, numbers and vertebral levels aside):
    anything else gets the generic (Tissue, Tissue).
    """
    from pydicom.sr.codedict import codes

    key = _normalise(name)
    if key in _ANATOMY:
        return codes.SCT.AnatomicalStructure, getattr(codes.SCT, _ANATOMY[key])
    abnormal = [w for w in key.split() if w in _ABNORMAL]
    if abnormal:  # "liver tumour", "kidney_cyst_left": the finding, not the organ
        return codes.SCT.MorphologicallyAbnormalStructure, getattr(codes.SCT, _ABNORMAL[abnormal[-1]])
    return codes.SCT.Tissue, codes.SCT.Tissue


def read_dicom_seg(path: str | Path) -> LabelMap:
    """Read a DICOM SEG file into a :class:`LabelMap` (see module docstring for the rules)."""
    import highdicom as hd

    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.segread(str(p))
    except Exception as e:
        raise CorruptFileError(f"{str(p)!r} is not a readable DICOM SEG object: {e}") from e
    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    names: dict[int, str] = {}
    colors: dict[int, tuple[int, int, int]] = {}
    values: dict[int, int] = {}
    for d in seg.SegmentSequence:
        n = int(d.SegmentNumber)
        tid = str(d.get("TrackingID", ""))
        values[n] = int(tid[len(TRACKING_PREFIX) :]) if tid.startswith(TRACKING_PREFIX) else n
        names[values[n]] = str(d.get("SegmentLabel", f"segment_{n}"))
        if "RecommendedDisplayCIELabValue" in d:
            rgb = hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue).to_rgb()
            colors[values[n]] = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    meta: dict[str, Any] = {"source": str(p), "format": "dicom-seg", "segmentation_type": str(seg.SegmentationType)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vol = seg.get_volume(combine_segments=False, segment_numbers=numbers)
        from medimg.io.dicom import volume_to_image

        img = volume_to_image(vol, meta)
        img = _onto_source_grid(img, seg, p)
        masks = img.array  # (x, y, z, segments)
        geometry: tuple[Any, Any, Any] = (img.spacing, img.origin, img.direction)
    except Exception:
        # No patient geometry (e.g. a SEG on a projection radiograph): one 2D frame per segment.
        px = np.asarray(seg.pixel_array)
        if px.ndim == 2:
            px = px[None]
        if px.shape[0] != len(numbers):
            raise CorruptFileError(
                f"{str(p)!r}: SEG without patient geometry and {px.shape[0]} frames for {len(numbers)} segments; "
                "medimg cannot place it."
            ) from None
        masks = np.moveaxis(px, 0, -1).swapaxes(0, 1)  # (x, y, segments)
        geometry = (None, None, None)
    binary = masks >= 0.5 if np.issubdtype(masks.dtype, np.floating) else masks > 0
    out_dtype = np.uint8 if max(values.values(), default=0) < 256 else np.uint16
    labels = np.zeros(binary.shape[:-1], dtype=out_dtype)
    for i, n in enumerate(numbers):
        labels[binary[..., i]] = values[n]
    overlap = int(np.count_nonzero(binary.sum(axis=-1) > 1))
    if overlap:
        meta["overlap_voxels"] = overlap
        warnings.warn(
            f"{p.name}: {overlap} voxels belong to more than one segment; in the label map the higher segment wins. "
            "Use read_dicom_seg_masks() to get every segment separately.",
            stacklevel=2,
        )
    spacing, origin, direction = geometry
    return LabelMap(
        labels,
        spacing,
        origin,
        direction,
        meta,
        names=names,
        colors=colors,
        ndim=labels.ndim if spacing is None else None,
    )


def _grid_block(ds: Any, create: bool = False) -> Any:
    return ds.private_block(GRID_GROUP, GRID_CREATOR, create=create)


def _onto_source_grid(img: Image, seg: Any, path: Path) -> Image:
    """A SEG without empty frames spans only its labelled slices: put it back on the source series' grid,
    which medimg records in a private element (other writers' SEGs are returned as they are)."""
    try:
        grid = json.loads(str(_grid_block(seg)[GRID_ELEMENT].value))
        full = Image(np.zeros(grid["shape"], np.uint8), grid["spacing"], grid["origin"], grid["direction"])
    except (KeyError, ValueError, TypeError):
        return img
    if full.ndim != img.ndim or img.same_geometry(full):
        return img
    offset = full.world_to_index(np.asarray(img.origin))
    start = np.round(offset).astype(int)
    end = start + np.asarray(img.shape)
    if (
        not np.allclose(offset, start, atol=1e-2)
        or not np.allclose(img.direction, full.direction, atol=1e-4)
        or not np.allclose(img.spacing, full.spacing, rtol=1e-4)
        or np.any(start < 0)
        or np.any(end > np.asarray(full.shape))
    ):
        warnings.warn(
            f"{path.name}: the recorded source grid does not contain the segment frames; ignored.", stacklevel=3
        )
        return img
    out = np.zeros((*full.shape, *img.array.shape[img.ndim :]), dtype=img.array.dtype)
    out[tuple(slice(a, b) for a, b in zip(start, end, strict=True))] = img.array
    return Image(out, full.spacing, full.origin, full.direction, img.meta)


def _read_reference(reference: str | Path | Image) -> tuple[Image, list[Any]]:
    import pydicom

    from medimg.io.dicom import choose_series, read_series_files, scan_folder

    if isinstance(reference, Image):
        src = reference.meta.get("source")
        if not src:
            raise DicomSeriesError("The reference image has no DICOM source; pass the DICOM folder instead.")
        reference = Path(src)
    ref = Path(reference)
    if ref.is_dir():
        chosen = choose_series(scan_folder(ref), "largest", ref)
        files = chosen.files
    else:
        files = [ref]
    image = read_series_files(files, source=str(ref))
    datasets = [pydicom.dcmread(f) for f in files]
    for d in datasets:  # anonymisers sometimes blank SOPClassUID; the file meta still has it
        if not str(d.get("SOPClassUID", "")) and "MediaStorageSOPClassUID" in d.file_meta:
            d.SOPClassUID = d.file_meta.MediaStorageSOPClassUID
        if "SpecificCharacterSet" in d and not str(d.SpecificCharacterSet).strip():
            del d.SpecificCharacterSet  # empty means the default repertoire; highdicom rejects ''
    missing = sorted(
        {
            k
            for d in datasets
            for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
            if not str(d.get(k, "")).strip()
        }
    )
    if missing:
        raise DicomSeriesError(
            f"The reference series in {str(ref)!r} has empty {', '.join(missing)} (removed by anonymisation?). A DICOM "
            "SEG must reference its source images by these UIDs, so it would be invalid. Use a series whose UIDs were "
            "replaced rather than removed, or save the labels as NIfTI / seg.nrrd instead."
        )
    # order the datasets like the image's z axis (ascending along the normal)
    normal = image.direction[:, 2]
    datasets.sort(key=lambda d: float(np.dot(np.asarray(d.ImagePositionPatient, float), normal)))
    return image, datasets


def _split_algorithm(algorithm: str) -> tuple[str, str]:
    """``"name"`` or ``"name version"`` (last word with a digit, e.g. ``"nnunet 2.1"``) -> (name, version);
    without a version, medimg's own version is recorded (the software that ran the model)."""
    import medimg

    head, _, last = algorithm.strip().rpartition(" ")
    if head and any(c.isdigit() for c in last):
        return head, last.lstrip("v")
    return algorithm.strip(), medimg.__version__


def write_dicom_seg(
    labels: LabelMap,
    path: str | Path,
    reference: str | Path | Image,
    *,
    names: Mapping[int, str] | None = None,
    algorithm: str | None = None,
    series_description: str = "medimg segmentation",
) -> None:
    """Write ``labels`` as a DICOM SEG referencing the DICOM series in ``reference`` (folder or file).

    ``algorithm``: name (optionally followed by a version, ``"name 1.2"``) of the algorithm that produced the
    labels: segments are then AUTOMATIC with that algorithm identified; None means MANUAL (e.g. converted
    annotations). Raises :class:`GeometryError` when the label grid differs from the
    reference series, :class:`LabelError` when no label is present.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import medimg

    ref_img, datasets = _read_reference(reference)
    if not labels.same_geometry(ref_img) and labels.ndim == ref_img.ndim:
        # A NIfTI label is usually stored in another axis order (e.g. RAS) than its DICOM series (LPS):
        # reorienting is exact, so try it before declaring the grids different.
        from medimg.transforms.spatial import reorient

        reoriented = reorient(labels, ref_img.orientation)
        if reoriented.same_geometry(ref_img):
            labels = reoriented  # type: ignore[assignment]
    check_same_geometry(labels, ref_img, what="label map and the DICOM reference series")
    present = labels.labels
    if not present:
        raise LabelError("The label map is empty (all zero): a DICOM SEG needs at least one segment.")
    all_names = {**labels.names, **(names or {})}
    seg_numbers = {v: i + 1 for i, v in enumerate(present)}
    arr = labels.array
    remapped = np.zeros(arr.shape, dtype=np.uint16 if len(present) > 255 else np.uint8)
    for v, n in seg_numbers.items():
        remapped[arr == v] = n
    frames = np.ascontiguousarray(remapped.transpose(2, 1, 0))  # (slice, row, column)
    if algorithm:
        algo_name, algo_version = _split_algorithm(algorithm)
        algo_type = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algo_id = hd.AlgorithmIdentificationSequence(
            name=algo_name[:64], version=algo_version[:64], family=codes.cid7162.ArtificialIntelligence
        )
    else:
        algo_type, algo_id = hd.seg.SegmentAlgorithmTypeValues.MANUAL, None
    descriptions = []
    for v, n in seg_numbers.items():
        label = all_names.get(v, f"label_{v}")
        category, prop_type = segment_codes(label)
        color = labels.colors.get(v) or label_color(v)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=label[:64],
                segmented_property_category=category,
                segmented_property_type=prop_type,
                algorithm_type=algo_type,
                algorithm_identification=algo_id,
                tracking_id=f"{TRACKING_PREFIX}{v}",
                tracking_uid=hd.UID(),
                display_color=hd.color.CIELabColor.from_rgb(*color),
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=900,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medimg",
            manufacturer_model_name="medimg",
            software_versions=medimg.__version__,
            device_serial_number="0",
            series_description=series_description,
            omit_empty_frames=True,  # a frame per (segment, slice) that holds voxels of the segment
        )
    grid = {
        "shape": list(labels.shape),
        "spacing": list(labels.spacing),
        "origin": list(labels.origin),
        "direction": labels.direction.tolist(),
    }
    _grid_block(seg, create=True).add_new(GRID_ELEMENT, "LT", json.dumps(grid))
    seg.save_as(str(path))
