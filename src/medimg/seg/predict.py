"""Inference with a trained model folder: preprocess as planned, sliding window with Gaussian blending (MONAI),
optional mirroring TTA, probabilities resampled back onto the input's exact grid, optional largest-component
post-processing, label names attached."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap
from medimg.seg.plan import preprocess_image

SW_BATCH = 2  # windows per network call


def window_count(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding window visits on an image of ``shape`` with ``patch`` windows overlapping
    by ``overlap`` (its scan interval and patch grid, the image padded up to the patch where smaller)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    size = tuple(max(int(s), int(p)) for s, p in zip(shape, patch, strict=True))
    roi = tuple(int(p) for p in patch)
    return len(dense_patch_slices(size, roi, _get_scan_interval(size, roi, len(size), (overlap,) * len(size))))


class Predictor:
    """A loaded segmentation model. ``Predictor(model_dir)(image)`` -> :class:`LabelMap` on the image's grid."""

    def __init__(
        self,
        model_dir: str | Path,
        precision: str | None = None,
        torchscript: str | Path | None = None,
        force: bool = False,
        onnx: str | Path | None = None,
        device: str | None = "cpu",
    ) -> None:
        """Load a model folder. ``force=True`` segments input outside the model's training domain instead of
        raising :class:`~medimg.errors.OutOfDomainError` (the output's ``meta["provenance"]`` records it).
        ``onnx`` (a file from :func:`medimg.seg.onnx_export.export_onnx` of this model) runs the network in ONNX
        Runtime instead of PyTorch (float32). ``device`` (``auto``, ``cpu``, ``cuda[:N]``;
        :func:`medimg.device.resolve_device`) is where the PyTorch network runs; ONNX Runtime runs on the CPU."""
        import torch

        from medimg.device import resolve_device
        from medimg.domain import load_image_domain
        from medimg.seg.train import build_network

        self.dir = Path(model_dir)
        for f in ("plan.json", "model.pt"):
            if not (self.dir / f).exists():
                raise MedimgError(f"{self.dir} is not a medimg model folder (missing {f}).")
        self.plan = json.loads((self.dir / "plan.json").read_text())
        info_path = self.dir / "model.json"
        self.info: dict[str, Any] = json.loads(info_path.read_text()) if info_path.exists() else {}
        self.torch = torch
        self.net: Any
        self.device = resolve_device(device) if onnx is None else torch.device("cpu")
        self.backend = "onnx" if onnx is not None else ("torchscript" if torchscript is not None else "torch")
        if onnx is not None:
            from medimg.seg.onnx_export import OnnxNet

            self.net = OnnxNet(onnx, self.dir)
            precision = "fp32"  # ONNX Runtime runs the float32 graph; torch's autocast does not reach it
        elif torchscript is not None:
            self.net = torch.jit.load(str(torchscript), map_location=self.device)
        else:
            self.net = build_network(self.plan)
            state = torch.load(self.dir / "model.pt", map_location="cpu", weights_only=True)
            self.net.load_state_dict({k: v.float() for k, v in state.items()})
            self.net.to(self.device)
        self.net.eval()
        self.precision = precision or self.info.get("precision", "fp32")
        self.names = {int(k): v for k, v in self.plan["labels"].items() if int(k) != 0}
        self.domain = load_image_domain(self.dir)
        self.force = force
        # ``progress(items, description) -> iterable`` (the operations layer's convention): advanced once per
        # network call of the sliding window (a batch of windows, each mirrored pass counted), when set.
        self.progress: Callable[[Sequence[Any], str], Any] | None = None

    def check_domain(self, image: Image | list[Image], force: bool | None = None) -> dict[str, Any]:
        """Check the input against the model's training domain; raise OutOfDomainError unless forced.

        Returns the provenance record (``in_domain``, ``forced``, ``differences``)."""
        from medimg.domain import domain_record, refuse_or_record

        images = image if isinstance(image, list) else [image]
        if self.domain is None:
            return domain_record([], False, checked=False)
        name = self.info.get("name", self.dir.name)
        return refuse_or_record(
            self.domain.differences(images), name, "The image", self.force if force is None else force
        )

    @property
    def n_classes(self) -> int:
        return max(int(k) for k in self.plan["labels"]) + 1

    def probabilities(self, images: list[Image], tta: bool | None = None) -> tuple[np.ndarray, Image]:
        """Class probabilities ``(K, *S)`` on the network grid, and that grid (an :class:`Image`)."""
        from monai.inferers import sliding_window_inference

        t = self.torch
        arr, grid = preprocess_image(images, self.plan)
        x = t.from_numpy(arr[None].astype(np.float32)).to(self.device)
        inf = self.plan["inference"]
        use_tta = inf.get("mirror_tta", False) if tta is None else tta
        dims = self.plan["dims"]
        # mirror along the axes augmentation mirrored in training (not a left-right axis of lateralised labels)
        mirror = [a + 2 for a in self.plan["augmentation"].get("mirror_axes", range(dims))]
        combos = [()] + (
            [c for r in range(1, len(mirror) + 1) for c in itertools.combinations(mirror, r)] if use_tta else []
        )
        acc = None
        overlap = inf.get("overlap", 0.5)
        calls = len(combos) * -(-window_count(x.shape[2:], self.plan["patch_size"], overlap) // SW_BATCH)
        ticks: Iterator[Any] = iter(self.progress(range(calls), "segmenting") if self.progress else ())

        def net(batch: Any) -> Any:
            next(ticks, None)
            return self.net(batch)

        with t.no_grad(), t.autocast(self.device.type, dtype=t.bfloat16, enabled=self.precision == "bf16"):
            for axes in combos:
                xi = x.flip(axes) if axes else x
                out = sliding_window_inference(
                    xi,
                    self.plan["patch_size"],
                    sw_batch_size=SW_BATCH,
                    predictor=net,
                    overlap=overlap,
                    mode="gaussian",
                )
                probs = t.softmax(t.as_tensor(out).float(), 1)
                probs = probs.flip(axes) if axes else probs
                acc = probs if acc is None else acc + probs
        assert acc is not None
        for _ in ticks:  # finish the progress display (a count estimate that ran short)
            pass
        return (acc / len(combos))[0].cpu().numpy(), grid

    def __call__(self, image: Image | list[Image], tta: bool | None = None, force: bool | None = None) -> LabelMap:
        """Segment one case (an image, or one image per channel); output on the first image's exact grid.

        Input outside the model's domain raises OutOfDomainError unless ``force`` (default: the Predictor's)."""
        return self._segment(image, tta, force)[0]

    def predict_with_probabilities(
        self, image: Image | list[Image], tta: bool | None = None, force: bool | None = None
    ) -> tuple[LabelMap, Image]:
        """The label map and the class probabilities (channels = classes), both on the first image's exact grid."""
        out, probs = self._segment(image, tta, force)
        prob_img = Image(np.moveaxis(probs, 0, -1).astype(np.float32), out.spacing, out.origin, out.direction)
        return out, prob_img

    def _segment(
        self, image: Image | list[Image], tta: bool | None, force: bool | None = None
    ) -> tuple[LabelMap, np.ndarray]:
        """Label map on the first image's grid and the ``(K, *S)`` probabilities on that grid."""
        import time

        import medimg
        from medimg.transforms.spatial import resample_to

        images = image if isinstance(image, list) else [image]
        domain = self.check_domain(images, force)
        original = images[0]
        probs, grid = self.probabilities(images, tta)
        if self.plan["resample"] or self.plan.get("resize_to"):
            chans = [
                resample_to(Image(p, grid.spacing, grid.origin, grid.direction), original, "linear").array
                for p in probs
            ]
            probs = np.stack(chans)
        labels = np.argmax(probs, axis=0).astype(np.uint8 if self.n_classes < 256 else np.uint16)
        labels = largest_component(labels, self.plan.get("postprocessing", {}).get("largest_component", []))
        out = LabelMap(
            labels,
            original.spacing,
            original.origin,
            original.direction,
            {
                "model": self.info.get("name", self.dir.name),
                "provenance": {
                    "software": f"medimg {medimg.__version__}",
                    "model": self.info.get("name", self.dir.name),
                    "model_version": self.info.get("medimg_version"),
                    "model_path": str(self.dir),
                    "tta": bool(self.plan["inference"].get("mirror_tta", False) if tta is None else tta),
                    "backend": self.backend,
                    "domain": domain,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            },
            names=self.names,
        )
        return out, probs


def largest_component(labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """Keep only the largest connected component of each class in ``classes`` (others become background)."""
    if not classes:
        return labels
    out = labels.copy()
    for c in classes:
        m = labels == c
        if not m.any():
            continue
        comp, n = ndimage.label(m)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            out[m & (comp != int(np.argmax(sizes)))] = 0
    return out


def export_torchscript(model_dir: str | Path, out: str | Path) -> Path:
    """Trace the model's network (eval mode, one patch) to TorchScript; ``Predictor(model_dir, torchscript=out)``
    then predicts with it. Written atomically."""
    import torch

    from medimg.io._atomic import atomic_path

    pred = Predictor(model_dir, precision="fp32")
    example = torch.zeros(1, len(pred.plan["channels"]), *pred.plan["patch_size"])
    with torch.no_grad():
        traced = torch.jit.trace(pred.net, example, check_trace=False)
    with atomic_path(out) as tmp:
        traced.save(str(tmp))
    return Path(out)
