"""The workbench's state: open images, their working label map, interactive objects, undo/redo, autosave and
the worklist.

One :class:`ImageSession` per opened file (its id is a hash of the resolved path, so two tabs opening the same
file share one session and one lock). Objects are label values in ONE label map; a prompt on an object changes
only the voxels its interactive session changed, and never voxels of another object. Every change is an entry on
an undo stack holding the changed bounding box before and after. After every change the label map is autosaved
(in a background thread, atomically) to ``.medimg/<image name>.labels.nii.gz`` beside the image, with the label
names in ``.medimg/<image name>.labels.json``; opening the image again restores it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.errors import MedimgError
from medimg.image import Image, LabelMap, label_voxel_counts
from medimg.io import EXTENSIONS
from medimg.ops import PathNotAllowedError, confine

SIDECAR = ".medimg"
STATUSES = ("new", "in progress", "done")
_LABEL_WORDS = ("label", "labels", "seg", "segmentation", "mask", "gt", "annotation")
_MAX_WORKLIST = 5000


class NotFoundError(MedimgError):
    """A file, image session or object that does not exist (HTTP 404)."""


def _ext(name: str) -> str:
    low = name.lower()
    for e in sorted(EXTENSIONS, key=len, reverse=True):
        if low.endswith(e):
            return e
    return ""


def _stem(name: str) -> str:
    e = _ext(name)
    return name[: -len(e)] if e else name


def _is_label_name(rel: Path) -> bool:
    if rel.name.lower().endswith(".seg.nrrd"):
        return True
    words = _stem(rel.name).lower().replace("-", "_").replace(".", "_").split("_")
    if any(w in _LABEL_WORDS for w in words):
        return True
    return any(p.lower().startswith(("labels", "segmentations", "masks")) for p in rel.parts[:-1])


def _base(stem: str) -> str:
    for suffix in ("_image", "_img", "_0000", "_t1", "_ct"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    out = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def _bbox3(sl: tuple[slice, ...]) -> list[list[int]]:
    """Inclusive corners ``[[x0, y0, z0], [x1, y1, z1]]`` (z = 0 for 2D images)."""
    lo = [s.start for s in sl] + [0] * (3 - len(sl))
    hi = [s.stop - 1 for s in sl] + [0] * (3 - len(sl))
    return [lo, hi]


def nifti_bytes(image: Image, gz: bool = True) -> bytes:
    """``image`` as NIfTI bytes written by medimg's own writer (no reorientation: voxel (i, j, k) of the file is
    medimg's (x, y, z))."""
    with tempfile.TemporaryDirectory(prefix="medimg-web-") as d:
        p = Path(d) / ("volume.nii.gz" if gz else "volume.nii")
        medimg.write(image, p)
        return p.read_bytes()


def downsample_image(image: Image, factor: int) -> Image:
    """A preview of ``image``: the mean of each ``factor``-wide block of voxels along every axis (an axis shorter
    than ``factor`` is averaged whole; a last partial block is dropped). The geometry follows so that the preview
    lies in the same place in the world: spacing times the block width, origin at the centre of the first block,
    same direction. Integer images stay in their dtype (rounded means); others become float32."""
    if factor < 1:
        raise MedimgError(f"downsample must be an integer >= 1, got {factor}.")
    a = image.array
    f = [min(factor, n) for n in a.shape]
    n = [size // fa for size, fa in zip(a.shape, f, strict=True)]
    out = np.zeros(n, np.float32, order="F" if a.flags.f_contiguous else "C")
    for offset in np.ndindex(*f):  # strided views: no copy of the whole array, whatever its memory order
        out += a[tuple(slice(o, o + k * fa, fa) for o, k, fa in zip(offset, n, f, strict=True))]
    out = out / np.float32(np.prod(f))
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(a.dtype)
    else:
        out = out.astype(np.float32)
    sp = np.asarray(image.spacing, float)
    shift = np.asarray(image.direction, float) @ (sp * (np.asarray(f, float) - 1) / 2)
    return Image(out, tuple(sp * f), tuple(np.asarray(image.origin, float) + shift), image.direction)


@dataclass
class Change:
    """One undoable change: the box it touched, the labels there before and after, and for a prompt the object
    and its prompts (so undo/redo keep the object's interactive session in step)."""

    box: tuple[slice, ...]
    before: np.ndarray
    after: np.ndarray
    obj: int | None = None
    prompts: list[Any] | None = None
    names_before: dict[int, str] = field(default_factory=dict)
    names_after: dict[int, str] = field(default_factory=dict)
    session: Any = None  # the object's interactive session the prompts went to
    within: np.ndarray | None = None  # the prompts' hard constraint (a lasso), given again on redo

    def objects(self) -> set[int]:
        """Label values whose voxels this change touched."""
        diff = self.before != self.after
        return {int(v) for v in np.unique(np.concatenate([self.before[diff], self.after[diff]])) if v}


class TaskProgress:
    """Progress of the long task running on an image (one at a time: segmentation), read by
    ``GET /api/images/{id}/progress`` while the task's own request is still running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"task": None, "stage": "", "done": 0, "total": 0, "running": False}
        self._t0 = 0.0
        self._t1: float | None = None

    def start(self, task: str, stage: str) -> None:
        with self._lock:
            self._state = {"task": task, "stage": stage, "done": 0, "total": 0, "running": True, "error": None}
            self._t0, self._t1 = time.perf_counter(), None

    def stage(self, stage: str) -> None:
        with self._lock:
            self._state.update(stage=stage, done=0, total=0)

    def finish(self, error: str | None = None) -> None:
        with self._lock:
            self._state.update(running=False, stage="failed" if error else "done", error=error)
            self._t1 = time.perf_counter()

    def iterate(self, items: Sequence[Any], what: str) -> Any:
        """The operations layer's ``progress(items, description)``: yields ``items``, counting them done."""
        seq = list(items)
        with self._lock:
            self._state.update(stage=what, done=0, total=len(seq))
        for i, item in enumerate(seq):
            yield item
            with self._lock:
                self._state["done"] = i + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            end = self._t1 if self._t1 is not None else time.perf_counter()
            return {**self._state, "elapsed_s": round(end - self._t0, 3) if self._state["task"] else 0.0}


class ImageSession:
    """One open image: the image, its working label map (``labels``: an integer array on the image grid), label
    names, interactive sessions per object, undo/redo stacks, and a lock that serialises every change."""

    def __init__(self, sid: str, path: Path, root: Path, rel: str, image: Image, store: Store) -> None:
        self.id, self.path, self.root, self.rel, self.store = sid, path, root, rel, store
        self.name = path.name
        # prompts read every channel (the promptable network reads any number; an RGBA picture's alpha dropped); the
        # viewer shows one grey image: colour pictures as luminance, other multi-channel images (MR sequences) their
        # first channel
        self.channels: Image | None = None
        if image.is_multichannel:
            from medimg.interactive.session import PHOTO_MODES, prompt_image
            from medimg.transforms.intensity import select_channel

            self.channels = prompt_image(image)
            image = select_channel(image, "grey" if image.meta.get("mode") in PHOTO_MODES else 0)
        self.image = image
        self.lock = threading.RLock()
        self.labels = np.zeros(image.shape, np.uint8)
        self.names: dict[int, str] = {}
        self.sessions: dict[int, Any] = {}
        self.undo_stack: list[Change] = []
        self.redo_stack: list[Change] = []
        self.restored = False
        self.shown_image: Path | None = None  # a review's image (None: the difference map itself)
        self._volume: dict[tuple[bool, int], bytes] = {}
        self._float: Image | None = None
        self.task = TaskProgress()

    # ------------------------------------------------------------------ files beside the image
    @property
    def sidecar_dir(self) -> Path:
        return (self.root if self.path == self.root else self.path.parent) / SIDECAR

    @property
    def sidecar(self) -> Path:
        return self.sidecar_dir / f"{self.name}.labels.nii.gz"

    @property
    def sidecar_names(self) -> Path:
        return self.sidecar_dir / f"{self.name}.labels.json"

    def restore(self) -> None:
        """Load the autosaved label map when there is one on this image's grid."""
        if not self.sidecar.exists():
            return
        lab = medimg.read_labels(self.sidecar)
        if lab.shape != self.image.shape:
            return
        self.labels = self._fit_dtype(lab.array, int(lab.array.max()) if lab.array.size else 0)
        if self.sidecar_names.exists():
            raw = json.loads(self.sidecar_names.read_text())
            self.names = {int(k): str(v) for k, v in raw.get("names", {}).items()}
        self.restored = True

    # ------------------------------------------------------------------ views
    def label_map(self) -> LabelMap:
        im = self.image
        return LabelMap(self.labels.copy(), im.spacing, im.origin, im.direction, names=self.all_names())

    def volumes_ml(self) -> dict[int, float]:
        v = self.image.voxel_volume_mm3 / 1000.0
        out = {k: float(c * v) for k, c in label_voxel_counts(self.labels).items()}
        for k in self.names:
            out.setdefault(k, 0.0)
        return dict(sorted(out.items()))

    def all_names(self) -> dict[int, str]:
        present = set(label_voxel_counts(self.labels))
        return {k: self.names.get(k, f"label {k}") for k in sorted(present | set(self.names))}

    def summary(self) -> dict[str, Any]:
        im = self.image
        return {
            "id": self.id,
            "name": self.name,
            "path": self.rel,
            "shape": list(im.shape),
            "spacing": [float(v) for v in im.spacing],
            "origin": [float(v) for v in im.origin],
            "direction": [[float(v) for v in row] for row in np.asarray(im.direction)],
            "dtype": str(im.array.dtype),
            "labels": {str(k): v for k, v in self.all_names().items()},
            "restored": self.restored,
        }

    def volume_bytes(self, gz: bool = True, downsample: int = 1) -> bytes:
        """The image as NIfTI bytes (cached per gzip and downsampling factor); see :func:`downsample_image`."""
        with self.lock:
            key = (gz, downsample)
            if key not in self._volume:
                im = self.image if downsample == 1 else downsample_image(self.image, downsample)
                self._volume[key] = nifti_bytes(im, gz)
            return self._volume[key]

    def labels_bytes(self, gz: bool = True) -> bytes:
        with self.lock:
            lab = self.label_map()
        return nifti_bytes(lab, gz)

    def region(self, lo: Sequence[int], hi: Sequence[int]) -> tuple[bytes, list[int], str]:
        """Raw labels of an inclusive box, x fastest (NIfTI order): bytes, box shape, dtype."""
        nd = self.labels.ndim
        sl = tuple(
            slice(max(0, int(a)), min(s, int(b) + 1))
            for a, b, s in zip(lo[:nd], hi[:nd], self.labels.shape, strict=True)
        )
        if any(s.stop <= s.start for s in sl):
            raise MedimgError(f"Empty region {list(lo)}-{list(hi)} for an image of shape {list(self.labels.shape)}.")
        with self.lock:
            crop = self.labels[sl]
            data = np.asarray(crop).tobytes(order="F")
        return data, [s.stop - s.start for s in sl], str(crop.dtype)

    # ------------------------------------------------------------------ changes
    def _fit_dtype(self, arr: np.ndarray, top: int) -> np.ndarray:
        dt = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
        return np.ascontiguousarray(arr, dtype=dt)

    def _ensure_value(self, value: int) -> None:
        if value > np.iinfo(self.labels.dtype).max:
            self.labels = self._fit_dtype(self.labels, value)

    def _commit(self, ch: Change) -> None:
        self.labels[ch.box] = ch.after
        self.names = dict(ch.names_after) if ch.names_after else self.names
        self.undo_stack.append(ch)
        self.redo_stack.clear()
        self.changed()

    def changed(self) -> None:
        self.store.autosave(self)
        self.store.set_status(self.root, self.rel, "in progress", only_if_new=True)

    def new_object(self, name: str) -> int:
        with self.lock:
            used = set(label_voxel_counts(self.labels)) | set(self.names)
            value = max(used | {0}) + 1
            self._ensure_value(value)
            before = dict(self.names)
            self.names[value] = name or f"object {value}"
            empty = tuple(slice(0, 0) for _ in self.labels.shape)
            self.undo_stack.append(
                Change(
                    empty, self.labels[empty].copy(), self.labels[empty].copy(), None, None, before, dict(self.names)
                )
            )
            self.redo_stack.clear()
            self.changed()
            return value

    def _float_image(self) -> Image:
        """The image the prompts segment (float32): every channel of a multi-channel image (RGBA: RGB)."""
        if self._float is None:
            im = self.channels if self.channels is not None else self.image
            self._float = Image(np.asarray(im.array, np.float32), im.spacing, im.origin, im.direction)
        return self._float

    def prompt(self, obj: int, kind: str, points: list[list[float]], positive: bool) -> dict[str, Any]:
        from medimg.interactive import InteractiveSession

        prompts = self._prompts(kind, points, positive)
        within = None
        if kind == "lasso":
            from medimg.interactive.prompts import lasso_constraint

            within = lasso_constraint(_prompt_list(points, self.labels.ndim), tuple(self.labels.shape), positive)
        with self.lock:
            if obj not in self.names and not np.any(self.labels == obj):
                raise NotFoundError(f"No object {obj} in this image; create one with POST .../objects first.")
            t0 = time.perf_counter()
            sess = self.sessions.get(obj)
            if sess is None:  # an object with voxels (segmented, uploaded, edited) is refined from them
                current = self.labels == obj
                img = self._float_image()
                # volumes: slice propagation — the workbench's box is drawn on one slice and its depth is a guess,
                # which the 3D network would take as the structure's true extent (and clip to it)
                sess = InteractiveSession(
                    img,
                    "learned",
                    self.store.promptable_model(),
                    initial_mask=current if current.any() else None,
                    engine="slices" if img.ndim == 3 else None,
                )
                self.sessions[obj] = sess
            prev = sess.mask
            new = sess.add_many(prompts, within=within)
            box = _bbox(prev != new)
            if box is None:
                pts = np.asarray([list(p)[: self.labels.ndim] for p in _prompt_points(prompts)], int)
                box = tuple(slice(int(a), int(b) + 1) for a, b in zip(pts.min(0), pts.max(0), strict=True))
                same = self.labels[box].copy()
                self.undo_stack.append(Change(box, same, same.copy(), obj, prompts, session=sess, within=within))
                self.redo_stack.clear()
            else:
                cur = self.labels[box]
                after = cur.copy()
                pn, nn = prev[box], new[box]
                after[nn & ~pn & ((cur == 0) | (cur == obj))] = obj
                after[pn & ~nn & (cur == obj)] = 0
                self._commit(Change(box, cur.copy(), after, obj, prompts, session=sess, within=within))
            voxels = int(np.count_nonzero(self.labels == obj))
            return {"bbox": _bbox3(box), "voxels": voxels, "ms": round(1000 * (time.perf_counter() - t0), 1)}

    def _prompts(self, kind: str, points: list[list[float]], positive: bool) -> list[Any]:
        from medimg.interactive import Box, Click, PromptError, Scribble, lasso_prompts

        pts = _prompt_list(points, self.labels.ndim)
        if kind == "click":
            return [Click(p, positive) for p in pts]
        if kind == "scribble":
            return [Scribble(tuple(pts), positive)]
        if kind == "lasso":  # the enclosed region on its slice (medimg.interactive.lasso_prompts)
            return lasso_prompts(pts, tuple(self.labels.shape), positive)
        if kind == "box":
            a = np.asarray(pts)
            if len(pts) != 2:
                raise PromptError("A box needs two points: [[x0, y0, z0], [x1, y1, z1]].")
            return [Box(tuple(int(v) for v in a.min(0)), tuple(int(v) for v in a.max(0)))]
        raise PromptError(f"Unknown prompt type {kind!r}: click, box, scribble or lasso.")

    def undo(self) -> dict[str, Any]:
        """Take back the last change: ``{"voxels": changed voxels, "bbox": inclusive corners of the changed box or
        None}`` (the browser reloads only that box)."""
        return self._step(undo=True)

    def redo(self) -> dict[str, Any]:
        """Apply the last undone change again (same answer as :meth:`undo`)."""
        return self._step(undo=False)

    def _step(self, undo: bool) -> dict[str, Any]:
        """Move the last change of one stack to the other, writing its labels (and names) before or after it."""
        src, dst = (self.undo_stack, self.redo_stack) if undo else (self.redo_stack, self.undo_stack)
        with self.lock:
            if not src:
                return {"voxels": 0, "bbox": None}
            ch = src.pop()
            values = ch.before if undo else ch.after
            n = int(np.count_nonzero(self.labels[ch.box] != values))
            self.labels[ch.box] = values
            if ch.names_after:
                self.names = dict(ch.names_before if undo else ch.names_after)
            self._sync_sessions(ch, undo=undo)
            dst.append(ch)
            self.changed()
            return {"voxels": n, "bbox": _bbox3(ch.box) if all(b.stop > b.start for b in ch.box) else None}

    def _sync_sessions(self, ch: Change, undo: bool) -> None:
        """Keep interactive sessions in step with the label map after undo/redo of ``ch``: a prompt is taken back
        from (or given again to) the session it went to; when that session is no longer the object's, or the
        change was not a prompt (segmentation, upload, edit), the sessions of the objects it touched are dropped,
        and the next prompt starts from the object's voxels."""
        cur = self.sessions.get(ch.obj) if ch.obj is not None else None
        if ch.prompts is not None and cur is not None and cur is ch.session:
            if undo:
                cur.undo()
            else:
                cur.add_many(ch.prompts, within=ch.within)  # the session's state follows the label map
            return
        for obj in ch.objects() | ({ch.obj} if ch.obj is not None else set()):
            self.sessions.pop(obj, None)

    def replace(self, arr: np.ndarray, names: dict[int, str] | None = None) -> int:
        """Replace the whole label map (an upload or an automatic segmentation) as one undoable change; returns
        the number of changed voxels."""
        if tuple(arr.shape) != tuple(self.labels.shape):
            raise MedimgError(
                f"The label map has shape {list(arr.shape)}; this image has shape {list(self.labels.shape)}."
            )
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) and np.any(arr != np.round(arr))):
            raise MedimgError("The label map has non-integer values.")
        if arr.size and arr.min() < 0:
            raise MedimgError("The label map has negative values.")
        with self.lock:
            top = int(arr.max()) if arr.size else 0
            self._ensure_value(top)
            new = arr.astype(self.labels.dtype)
            box = _bbox(new != self.labels)
            before_names = dict(self.names)
            after_names = dict(names) if names is not None else dict(self.names)
            if box is None and after_names == before_names:
                return 0
            box = box or tuple(slice(0, 0) for _ in self.labels.shape)
            n = int(np.count_nonzero(new[box] != self.labels[box]))
            ch = Change(box, self.labels[box].copy(), new[box].copy(), None, None, before_names, after_names)
            self._commit(ch)
            for obj in ch.objects():  # the next prompt on a changed object starts from its new voxels
                self.sessions.pop(obj, None)
            return n


DIFFERENCE_NAMES = {1: "both", 2: "prediction only (false positive)", 3: "reference only (false negative)"}


def difference_map(pred: np.ndarray, ref: np.ndarray, label: int | None = None) -> np.ndarray:
    """1 where both label the voxel alike, 2 where the prediction labels it and the reference does not with the
    same value (a false positive, a wrong label included), 3 where only the reference labels it (a false
    negative); with ``label``, that label against the rest."""
    if label is not None:
        pred, ref = pred == label, ref == label
    out = np.zeros(pred.shape, np.uint8)
    p, r = pred != 0, ref != 0
    same = pred == ref
    out[p & same] = 1
    out[p & ~same] = 2
    out[~p & r] = 3
    return out


class ReviewSession(ImageSession):
    """A prediction against a reference on one grid: the difference map (:func:`difference_map`) as the working
    labels, shown over ``image`` (the image the labels belong to) or, without one, over the difference map itself.
    Kept in memory only: changes are neither autosaved nor put on the worklist."""

    def changed(self) -> None:
        pass


def _prompt_list(points: list[list[float]], nd: int) -> list[tuple[int, ...]]:
    """The API's points (``[x, y, z]``; z = 0 on a 2D image) as voxel index tuples of the image's dimension."""
    from medimg.interactive import PromptError

    if not points:
        raise PromptError("A prompt needs at least one point.")
    pts = []
    for p in points:
        q = [round(float(v)) for v in p]
        if nd == 2 and len(q) == 3:
            if q[2] != 0:
                raise PromptError(f"Point {p}: this image is 2D, so z must be 0.")
            q = q[:2]
        if len(q) != nd:
            raise PromptError(f"Point {p} has {len(q)} coordinates; this image has {nd} dimensions.")
        pts.append(tuple(q))
    return pts


def _prompt_points(prompts: list[Any]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    for p in prompts:
        if hasattr(p, "point"):
            out.append(p.point)
        elif hasattr(p, "points"):
            out += list(p.points)
        else:
            out += [p.lo, p.hi]
    return out


class Store:
    """Every open :class:`ImageSession`, the served roots, the worklist files and the autosave thread."""

    def __init__(self, roots: Sequence[Path], files: Sequence[Path] | None = None) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        for r in self.roots:
            if not r.is_dir():
                raise MedimgError(f"Served folder {str(r)!r} does not exist or is not a folder.")
        self.files = [Path(f).resolve() for f in files] if files else None
        self.sessions: dict[str, ImageSession] = {}
        self._lock = threading.Lock()
        self._wl_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._dirty: dict[str, ImageSession] = {}
        self._cv = threading.Condition()
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._autosave_loop, name="medimg-autosave", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ paths
    def resolve(self, path: str) -> Path:
        """A requested path confined to the roots (relative: the first root where it exists); 403 / 404."""
        p = Path(path)
        if not p.is_absolute():
            for r in self.roots:
                if (r / p).exists() or (r / p).is_symlink():
                    return confine(r / p, self.roots)
        rp = confine(p, self.roots)
        if not rp.exists():
            raise NotFoundError(f"{path!r} does not exist under the served folders.")
        return rp

    def root_of(self, p: Path) -> Path:
        for r in self.roots:
            if p == r or r in p.parents:
                return r
        raise PathNotAllowedError(f"{str(p)!r} is outside the served folders.")

    def rel(self, p: Path) -> str:
        r = self.root_of(p)
        return p.relative_to(r).as_posix() if p != r else "."

    # ------------------------------------------------------------------ the promptable model (loaded once)
    def promptable_model(self) -> Any:
        """The bundled 2D promptable model (it reads any number of channels), loaded once per process."""
        from medimg.interactive.session import bundled_model

        with self._model_lock:
            return bundled_model("2d")

    def warm_up(self) -> None:
        """Load the promptable model and the random walker's libraries before the first prompt."""
        import skimage.segmentation  # noqa: F401

        self.promptable_model()

    # ------------------------------------------------------------------ sessions
    def open(self, path: str, labels: str | None = None) -> ImageSession:
        p = self.resolve(path)
        sid = hashlib.sha1(str(p).encode()).hexdigest()[:12]
        with self._lock:
            s = self.sessions.get(sid)
            if s is None:
                image = medimg.read(p)
                if image.ndim not in (2, 3):
                    raise MedimgError(f"{p.name!r} is {image.ndim}D; the workbench shows 2D and 3D images.")
                s = ImageSession(sid, p, self.root_of(p), self.rel(p), image, self)
                s.restore()
                self.sessions[sid] = s
        if labels:
            lab = medimg.read_labels(self.resolve(labels))
            s.replace(lab.array, {**s.names, **lab.names})
        return s

    def review(
        self, prediction: Path, reference: Path, image: Path | None = None, label: int | None = None
    ) -> ReviewSession:
        """Register a :class:`ReviewSession` for two label maps on the same grid (paths already confined); the
        image under them is ``image``, else the worklist image the reference (or prediction) belongs to when it is
        on the same grid, else the difference map itself."""
        from medimg.image import check_same_geometry

        pred, ref = medimg.read_labels(prediction), medimg.read_labels(reference)
        check_same_geometry(pred, ref, "prediction and reference")
        diff = difference_map(pred.array, ref.array, label)
        base: Image | None = None
        shown = image
        if image is not None:
            base = medimg.read(image)
            check_same_geometry(base, ref, "image and reference")
        else:
            for cand in self._images_of(reference, prediction):
                try:
                    im = medimg.read(cand)
                    check_same_geometry(im, ref, "image and reference")
                except MedimgError:
                    continue
                base, shown = im, cand
                break
        if base is None:
            base = Image(diff.copy(), ref.spacing, ref.origin, ref.direction)
        key = "\0".join(["review", str(prediction), str(reference), str(shown), str(label)])
        sid = hashlib.sha1(key.encode()).hexdigest()[:12]
        s = ReviewSession(sid, prediction, self.root_of(prediction), self.rel(prediction), base, self)
        s.name = f"{prediction.name} vs {reference.name}"
        s.labels = diff
        s.names = dict(DIFFERENCE_NAMES)
        s.shown_image = shown
        with self._lock:
            self.sessions[sid] = s
        return s

    def _images_of(self, *labels: Path) -> list[Path]:
        """Worklist images that these label files lie beside (see :func:`_belongs`)."""
        out = []
        for root in self.roots:
            rels = [lf.relative_to(root) for lf in labels if root in lf.parents]
            if not rels:
                continue
            images, _ = self._scan(root)
            out += [root / im for lf in rels for im in images if _belongs(lf, im) and root / im not in labels]
        return out

    def get(self, sid: str) -> ImageSession:
        s = self.sessions.get(sid)
        if s is None:
            raise NotFoundError(f"No open image {sid!r}; open it with POST /api/images first.")
        return s

    # ------------------------------------------------------------------ autosave
    def autosave(self, s: ImageSession) -> None:
        with self._cv:
            self._dirty[s.id] = s
            self._cv.notify_all()

    def _autosave_loop(self) -> None:
        while True:
            with self._cv:
                while not self._dirty and not self._stop:
                    self._cv.wait()
                if self._stop and not self._dirty:
                    return
                sid, s = next(iter(self._dirty.items()))
                del self._dirty[sid]
                self._busy = True
            try:
                self._write_sidecar(s)
            except Exception as e:  # keep serving; the next change retries
                print(f"medimg serve: autosave of {s.name} failed: {e}")
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _write_sidecar(self, s: ImageSession) -> None:
        with s.lock:
            lab = s.label_map()
            names = s.all_names()
        s.sidecar_dir.mkdir(exist_ok=True)
        medimg.write(lab, s.sidecar)
        tmp = s.sidecar_names.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"names": {str(k): v for k, v in names.items()}}, indent=1))
        os.replace(tmp, s.sidecar_names)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every pending autosave is written."""
        end = time.monotonic() + timeout
        with self._cv:
            while (self._dirty or self._busy) and time.monotonic() < end:
                self._cv.wait(0.05)

    def close(self) -> None:
        self.flush()
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    # ------------------------------------------------------------------ worklist
    def _wl_path(self, root: Path) -> Path:
        return root / SIDECAR / "worklist.json"

    def _wl_read(self, root: Path) -> dict[str, Any]:
        p = self._wl_path(root)
        try:
            return dict(json.loads(p.read_text())) if p.exists() else {}
        except ValueError:
            return {}

    def set_status(self, root: Path, rel: str, status: str, only_if_new: bool = False) -> dict[str, Any]:
        if status not in STATUSES:
            raise MedimgError(f"Unknown status {status!r}: {', '.join(STATUSES)}.")
        with self._wl_lock:
            wl = self._wl_read(root)
            cur = wl.get(rel, {}).get("status", "new")
            if only_if_new and cur != "new":
                return dict(wl[rel])
            try:
                who = getpass.getuser()
            except (KeyError, OSError):
                who = "unknown"
            wl[rel] = {"status": status, "by": who, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            p = self._wl_path(root)
            p.parent.mkdir(exist_ok=True)
            tmp = p.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(wl, indent=1, sort_keys=True))
            os.replace(tmp, p)
            return dict(wl[rel])

    def worklist(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for root in self.roots:
            images, label_files = self._scan(root)
            wl = self._wl_read(root)
            for rel in images:
                if self.files is not None and (root / rel).resolve() not in self.files:
                    continue
                st = wl.get(rel.as_posix(), {})
                out.append(
                    {
                        "path": rel.as_posix(),
                        "name": rel.name,
                        "status": st.get("status", "new"),
                        "by": st.get("by"),
                        "at": st.get("at"),
                        "labels": [lf.as_posix() for lf in label_files if _belongs(lf, rel)],
                    }
                )
        return out

    def model_folders(self, max_depth: int = 4, max_dirs: int = 5000) -> list[Path]:
        """Segmentation model folders (``plan.json`` + ``model.pt``) under the served roots, at most ``max_depth``
        folders deep (hidden folders and symlinks not followed; the walk stops after ``max_dirs`` folders)."""
        from medimg.registry import kind_of

        found: list[Path] = []
        seen = 0
        for root in self.roots:
            for dirpath, dirnames, _ in os.walk(root, followlinks=False):
                here = Path(dirpath)
                seen += 1
                depth = len(here.relative_to(root).parts)
                if kind_of(here) == "segmentation" and (here / "model.pt").is_file():
                    found.append(here)
                    dirnames[:] = []
                    continue
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
                if seen >= max_dirs:
                    break
        return found

    def _scan(self, root: Path) -> tuple[list[Path], list[Path]]:
        images: list[Path] = []
        labels: list[Path] = []
        n = 0
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            here = Path(dirpath).relative_to(root)
            dicoms = [f for f in filenames if f.lower().endswith((".dcm", ".dicom"))]
            if dicoms and len(dicoms) >= 2 and not _is_label_name(here / "x"):
                images.append(here)  # a DICOM series folder
                filenames = [f for f in filenames if f not in dicoms]
            for f in sorted(filenames):
                if f.startswith(".") or not _ext(f):
                    continue
                n += 1
                if n > _MAX_WORKLIST:
                    return images, labels
                rel = here / f
                (labels if _is_label_name(rel) else images).append(rel)
        return images, labels


def _belongs(label: Path, image: Path) -> bool:
    """Whether a label file lies beside an image: same folder and its name starts with the image's base name, or
    in a sibling ``labels*`` folder with the same (base) name."""
    istem, lstem = _stem(image.name), _stem(label.name)
    if lstem.lower().endswith(".seg"):
        lstem = lstem[:-4]
    base = _base(istem)
    if label.parent == image.parent:
        return lstem != istem and lstem.startswith(base)
    if label.parent.parent == image.parent.parent:
        return lstem in (istem, base) or _base(lstem) == base
    return False
