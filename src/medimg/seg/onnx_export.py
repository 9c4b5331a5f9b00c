"""ONNX export of a segmentation model's network and an ONNX Runtime backend for :class:`~medimg.seg.Predictor`.

    medimg models export hippocampus -o hippo.onnx           # checked against PyTorch before it is kept
    medimg segment image.nii.gz -m hippocampus --onnx hippo.onnx -o seg.nii.gz

The exported graph takes ``(N, C, *patch_size)`` float32 windows (``N`` free) and returns the logits of the highest
resolution head; everything around it (resampling, normalisation, sliding window, TTA, mapping back onto the input
grid, post-processing, the domain check) stays medimg's, so a prediction through ONNX Runtime is the same label map.
The file records the SHA-256 of the ``model.pt`` it came from, and a model folder refuses an ONNX file exported
from other weights. Whether ONNX Runtime is faster than PyTorch depends on the network and the CPU: see
``benchmarks/onnx_speed.py``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError

#: Largest relative difference between ONNX Runtime's and PyTorch's logits accepted at export.
EXPORT_TOLERANCE = 1e-3


def weights_sha256(model_dir: Path) -> str:
    """SHA-256 of a model folder's ``model.pt``."""
    return hashlib.sha256((Path(model_dir) / "model.pt").read_bytes()).hexdigest()


def _need_onnx() -> Any:
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - a dependency of medimg
        raise MedimgError("ONNX Runtime is not installed: pip install onnxruntime onnx (or medimg[dev]).") from None
    return onnxruntime


def export_onnx(model_dir: str | Path, out: str | Path, batch: int = 2) -> dict[str, Any]:
    """Export the network of ``model_dir`` to ``out`` (written atomically), verified against PyTorch on random
    windows. Returns ``{"path", "max_abs_diff", "relative_diff", "patch_size"}``."""
    import onnx
    import torch

    from medimg.io._atomic import atomic_path
    from medimg.seg.train import build_network

    ort = _need_onnx()
    model_dir = Path(model_dir)
    for f in ("plan.json", "model.pt"):
        if not (model_dir / f).exists():
            raise MedimgError(f"{model_dir} is not a medimg model folder (missing {f}).")
    plan = json.loads((model_dir / "plan.json").read_text())
    info = json.loads((model_dir / "model.json").read_text()) if (model_dir / "model.json").exists() else {}
    net: torch.nn.Module = build_network(plan)
    state = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    net.eval()
    patch = [int(p) for p in plan["patch_size"]]
    example = torch.randn(batch, len(plan["channels"]), *patch, generator=torch.Generator().manual_seed(0))
    out = Path(out)
    if out.suffix != ".onnx":
        raise MedimgError(f"An ONNX file name ends in .onnx (got {out.name}).")
    with torch.no_grad():
        want = net(example).float().numpy()
    with atomic_path(out) as tmp, warnings.catch_warnings():
        # the TorchScript-based exporter (kept for its fixed-shape graphs) warns about its own deprecation and about
        # instance norm's "training" flag, which is how MONAI's instance norm always computes (per-window stats)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "windows"}, "logits": {0: "windows"}},
        )
        m = onnx.load(str(tmp))
        for k, v in {
            "medimg_model": str(info.get("name", model_dir.name)),
            "medimg_weights_sha256": weights_sha256(model_dir),
            "patch_size": ",".join(map(str, patch)),
        }.items():
            p = m.metadata_props.add()
            p.key, p.value = k, v
        onnx.save(m, str(tmp))
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"image": example.numpy()})[0]
        diff = float(np.abs(got - want).max())
        rel = diff / max(float(np.abs(want).max()), 1e-6)
        if got.shape != want.shape or rel > EXPORT_TOLERANCE:
            raise MedimgError(
                f"The ONNX graph does not reproduce the network (max difference {diff:.3g}, {rel:.2%} of the logits' "
                "range); nothing was written. Use the PyTorch model, or report this with the model folder."
            )
    return {"path": str(out), "max_abs_diff": diff, "relative_diff": rel, "patch_size": patch}


class OnnxNet:
    """An ONNX Runtime session standing in for the network inside :class:`~medimg.seg.Predictor`: a torch tensor
    of windows in, the logits as a torch tensor out (float32)."""

    def __init__(self, path: str | Path, model_dir: Path, threads: int | None = None) -> None:
        import torch

        ort = _need_onnx()
        path = Path(path)
        if not path.is_file():
            raise MedimgError(f"ONNX file {path} does not exist; export it with: medimg models export MODEL -o {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise MedimgError(f"{path} is not an ONNX model ONNX Runtime can load: {e}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("medimg_weights_sha256") != weights_sha256(model_dir):
            raise MedimgError(
                f"{path} was not exported from this model's weights ({model_dir}/model.pt); export it again: "
                f"medimg models export {model_dir} -o {path}"
            )
        self.input = self.session.get_inputs()[0].name
        self.torch = torch

    def __call__(self, x: Any) -> Any:
        y = self.session.run(None, {self.input: x.detach().float().contiguous().numpy()})[0]
        return self.torch.from_numpy(y)

    def eval(self) -> OnnxNet:
        return self
