"""Workbench speed (issue 14, "What it must show"): the real server, a real headless browser, real data.

Starts `medimg serve`'s app (``create_app`` on a temporary served folder, uvicorn in a thread, the promptable model
warmed up in the background as ``medimg serve`` does) and measures

1. time to first rendered image in headless Chromium (Debian's ``/usr/bin/chromium``, WebGL2 through SwiftShader,
   driven by Playwright, flags as in tests/test_web_browser.py) for the TotalSegmentator example CT and for a
   SYNTHETIC 512 x 512 x 300 int16 CT (an ellipse body with lungs and spine plus noise, written as .nii.gz).
   Each repeat is a new tab with the app loaded and a file the server has not opened yet (a fresh name, so a
   cold server-side session, like a user opening a case); the clock starts when the app's own
   ``workbench.openImage(path)`` is called (what a worklist click calls) and stops when the WebGL canvas first
   shows the image: a read-back of the canvas right after each of NiiVue's ``drawScene`` calls has > 50 distinct
   grey levels (the browser test's criterion; a Playwright screenshot afterwards checks it again). Also
   recorded: when ``openImage`` finished (label overlay and volumes table loaded too) and where the time went
   (the browser's resource timings of ``POST /api/images`` and ``GET .../volume``: server time to first byte and
   transfer; then NIfTI parsing until NiiVue's ``addVolume``; then the first draw). Goal <= 2 s.
2. prompt round trip: ``POST .../objects/{o}/prompts`` (a click) + ``GET .../labels/region`` of the returned
   changed box, from a Python HTTP client (httpx, keep-alive), for 3D (MSD hippocampus_006; a 128^3 crop of the
   ANTs MNI brain template with structures of its labelled atlas) and 2D (an HC18 ultrasound PNG, 800 x 540).
   Clicks are those a user would make: the first inside a reference structure, then corrective clicks at the
   largest error of the mask as fetched from the server (``next_click``); every 5 prompts the object is undone
   and a new object is started on the next structure. Goals: 3D <= 500 ms, 2D <= 100 ms. Server-side timing
   wrappers (around the promptable model's segment_volume/segment_slice and the 3D random-walker ``refine_3d``)
   say which part of the server's time dominates.
   Diagnosis of a miss: the same open of the synthetic CT averaged over 4 x 4 x 4 blocks (what a downsampled
   first image would cost; the app does not do this), and in-process timings of the server's part (reading,
   gzip vs raw vs ISA-L NIfTI bytes, the open session's summary / volumes / label-map bytes).
3. 50 concurrent API requests (25 ``GET /api/health`` + 25 ``GET .../volume`` of the CT): all must be 200 with the
   same bytes; total wall time.

Results: stdout and benchmarks/results/web_speed.json (date, machine, versions, data, load average, wall time).

    python benchmarks/web_speed.py [--data ../shared/data] [--repeat 3] [--prompts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.image import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [  # as in tests/test_web_browser.py
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
GOALS_MS = {"first_image": 2000.0, "prompt_3d": 500.0, "prompt_2d": 100.0}
PER_OBJECT = 5  # prompts per object before it is undone and the next one started

# In the page: after every NiiVue drawScene (synchronous, ends with gl.finish), once an open is under way and a
# volume is loaded, read the canvas back and record the first time it shows an image (> 50 distinct grey levels).
HOOK_JS = """() => {
  const nv = workbench.nv;
  const gl = nv.gl;
  const draw = nv.drawScene.bind(nv);
  const add = nv.addVolume.bind(nv);
  nv.addVolume = (v) => {
    if (window.__t0 !== undefined && window.__added === undefined) window.__added = performance.now() - window.__t0;
    return add(v);
  };
  nv.drawScene = (...a) => {
    const r = draw(...a);
    if (window.__t0 !== undefined && window.__first === undefined && nv.volumes.length > 0) {
      const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
      const px = new Uint8Array(w * h * 4);
      gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
      const seen = new Set();
      for (let i = 0; i < px.length; i += 4) seen.add(px[i]);
      if (seen.size > 50) { window.__first = performance.now() - window.__t0; window.__levels = seen.size; }
    }
    return r;
  };
}"""

OPEN_JS = """(path) => {
  window.__t0 = performance.now();
  workbench.openImage(path).then(
    () => { window.__done = performance.now() - window.__t0; },
    (e) => { window.__err = String(e && e.message || e); });
}"""

TIMINGS_JS = """() => {
  const t0 = window.__t0;
  const rel = (v) => (v ? v - t0 : null);
  return performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/images')).map((e) => ({
    url: new URL(e.name).pathname + new URL(e.name).search, start: rel(e.startTime),
    request_start: rel(e.requestStart), response_start: rel(e.responseStart), response_end: rel(e.responseEnd),
    bytes: e.encodedBodySize }));
}"""


# ---------------------------------------------------------------------------------------------------- helpers


def stats(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
        "n": len(values),
    }


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(root: Path) -> Iterator[tuple[str, Any]]:
    """The real server (create_app on ``root``) on a free port, in a thread; yields (base URL, app)."""
    import uvicorn

    from medimg.web.server import create_app

    port = _free_port()
    app = create_app([root])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class Timers:
    """Timing wrappers around server-side functions (the originals are called; only their time is recorded)."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {}
        self._undo: list[Callable[[], None]] = []
        self._active = threading.local()

    def wrap(self, owner: Any, name: str, key: str) -> None:
        orig = getattr(owner, name)
        active = self._active

        def timed(*a: Any, **k: Any) -> Any:
            if getattr(active, key, False):  # nested (segment_volume calls segment_slice): count the outer call
                return orig(*a, **k)
            setattr(active, key, True)
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                setattr(active, key, False)
                self.ms.setdefault(key, []).append(1000 * (time.perf_counter() - t0))

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, orig))

    def take(self) -> dict[str, list[float]]:
        out, self.ms = self.ms, {}
        return out

    def restore(self) -> None:
        for u in reversed(self._undo):
            u()


def synthetic_ct(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A SYNTHETIC int16 CT (HU): air outside, an elliptical soft-tissue body, two lungs, a spine, noise sd 15."""
    nx, ny, nz = shape
    x = np.linspace(-1, 1, nx, dtype=np.float32)[:, None]
    y = np.linspace(-1, 1, ny, dtype=np.float32)[None, :]
    sl = np.full((nx, ny), -1000, np.int16)
    sl[(x / 0.85) ** 2 + (y / 0.6) ** 2 < 1] = 40
    sl[((np.abs(x) - 0.35) / 0.25) ** 2 + (y / 0.35) ** 2 < 1] = -850
    sl[x**2 + (y - 0.4) ** 2 < 0.012] = 700
    vol = np.repeat(sl[:, :, None], nz, axis=2)
    rng = np.random.default_rng(seed)
    for z0 in range(0, nz, 50):  # noise in slabs (memory)
        z1 = min(nz, z0 + 50)
        vol[:, :, z0:z1] += rng.normal(0, 15, size=(nx, ny, z1 - z0)).astype(np.int16)
    return vol


def versions(browser_version: str | None) -> dict[str, Any]:
    from importlib.metadata import version

    out: dict[str, Any] = {"medimg": medimg.__version__, "python": platform.python_version()}
    for pkg in ("fastapi", "uvicorn", "httpx", "playwright", "numpy", "torch", "scikit-image"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    out["niivue"] = json.loads((ROOT / "web" / "package.json").read_text())["dependencies"]["@niivue/niivue"]
    out["chromium"] = browser_version
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2, 1)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": mem,
        "arch": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------------- data


def prepare(data: Path, root: Path, repeat: int, brain: bool) -> dict[str, Any]:
    """Copy/write the cases into the served folder; returns what each case is (for the JSON)."""
    from scipy import ndimage

    cases: dict[str, Any] = {}
    # (a) the TotalSegmentator example CT, one copy per repeat (fresh server sessions)
    ct_src = data / "totalsegmentator" / "example_ct.nii.gz"
    ct = medimg.read(ct_src)
    (root / "ct").mkdir()
    for i in range(repeat):
        shutil.copy(ct_src, root / "ct" / f"example_ct_{i}.nii.gz")
    cases["totalseg_ct"] = {
        "source": str(ct_src),
        "shape": list(ct.shape),
        "spacing": [float(v) for v in ct.spacing],
        "dtype": str(ct.array.dtype),
        "file_mb": round(ct_src.stat().st_size / 1e6, 2),
        "files": [f"ct/example_ct_{i}.nii.gz" for i in range(repeat)],
    }
    # (b) a SYNTHETIC 512 x 512 x 300 int16 CT, written once and hard-linked under fresh names
    t0 = time.perf_counter()
    syn = Image(synthetic_ct((512, 512, 300)), (0.7, 0.7, 1.0), (-179.0, -179.0, -300.0))
    (root / "synthetic").mkdir()
    first = root / "synthetic" / "synthetic_ct_0.nii.gz"
    medimg.write(syn, first)
    for i in range(1, repeat):
        os.link(first, root / "synthetic" / f"synthetic_ct_{i}.nii.gz")
    cases["synthetic_ct"] = {
        "source": "SYNTHETIC (written by this script): 512 x 512 x 300 int16 HU, 0.7 x 0.7 x 1.0 mm, ellipse body "
        "40 HU, lungs -850 HU, spine 700 HU, air -1000 HU, Gaussian noise sd 15 HU; medimg's NIfTI writer (gzip 1)",
        "shape": list(syn.shape),
        "spacing": [0.7, 0.7, 1.0],
        "dtype": "int16",
        "file_mb": round(first.stat().st_size / 1e6, 2),
        "files": [f"synthetic/synthetic_ct_{i}.nii.gz" for i in range(repeat)],
        "write_s": round(time.perf_counter() - t0, 2),
    }
    # what a 4x-downsampled preview of it would give (NOT what the app does now: a proposed fix, see the docs)
    prev = np.asarray(syn.array, np.float32).reshape(128, 4, 128, 4, 75, 4).mean(axis=(1, 3, 5))
    prev_img = Image(np.rint(prev).astype(np.int16), (2.8, 2.8, 4.0), syn.origin)
    (root / "preview").mkdir()
    for i in range(repeat):
        medimg.write(prev_img, root / "preview" / f"synthetic_ct_preview4_{i}.nii.gz")
    cases["synthetic_ct_preview4"] = {
        "source": "the SYNTHETIC CT averaged over 4 x 4 x 4 blocks (128 x 128 x 75 int16, 2.8 x 2.8 x 4 mm): what a "
        "first, downsampled preview would cost (the app does not do this yet)",
        "shape": [128, 128, 75],
        "dtype": "int16",
        "file_mb": round((root / "preview" / "synthetic_ct_preview4_0.nii.gz").stat().st_size / 1e6, 2),
        "files": [f"preview/synthetic_ct_preview4_{i}.nii.gz" for i in range(repeat)],
    }
    del syn, prev

    # 3D prompts: MSD hippocampus_006 (the browser test's case), reference labels 1 and 2
    hip = ROOT / "tests" / "data" / "hippocampus"
    (root / "hippocampus").mkdir()
    shutil.copy(hip / "imagesTr" / "hippocampus_006.nii.gz", root / "hippocampus" / "hippocampus_006.nii.gz")
    gt = np.asarray(medimg.read_labels(hip / "labelsTr" / "hippocampus_006.nii.gz").array)
    img = medimg.read(hip / "imagesTr" / "hippocampus_006.nii.gz")
    cases["hippocampus"] = {
        "source": "tests/data/hippocampus/imagesTr/hippocampus_006.nii.gz (MSD Task04, CC-BY-SA 4.0)",
        "shape": list(img.shape),
        "dtype": str(img.array.dtype),
        "path": "hippocampus/hippocampus_006.nii.gz",
        "structures": {"anterior (1)": gt == 1, "posterior (2)": gt == 2},
        "dim": 3,
    }
    # 3D prompts: a 128^3 crop of the ANTs MNI brain template, atlas structures of 4 sizes inside the crop
    if brain:
        mni = medimg.read(data / "ants" / "mni.nii.gz")
        atlas = np.rint(np.asarray(medimg.read(data / "ants" / "mnia.nii.gz").array)).astype(int)
        lo = [(s - 128) // 2 for s in mni.shape]
        sl = tuple(slice(a, a + 128) for a in lo)
        crop = np.ascontiguousarray(np.asarray(mni.array)[sl])
        origin = [float(o) + float(sp) * a for o, sp, a in zip(mni.origin, mni.spacing, lo, strict=True)]
        (root / "brain").mkdir()
        medimg.write(Image(crop, mni.spacing, origin, mni.direction), root / "brain" / "mni_crop128.nii.gz")
        acrop = atlas[sl]
        inside = []
        for v in np.unique(acrop):
            if v == 0:
                continue
            n_all, n_in = int((atlas == v).sum()), int((acrop == v).sum())
            if n_in == n_all and n_in >= 200:
                inside.append((n_in, int(v)))
        inside.sort()
        picks = [inside[int(q * (len(inside) - 1))] for q in (0.2, 0.45, 0.7, 0.95)]
        cases["brain_crop"] = {
            "source": f"ANTs MNI template {data / 'ants' / 'mni.nii.gz'} cropped to 128^3 at {lo}; structures from "
            "the labelled atlas mnia.nii.gz (Apache-2.0 repo)",
            "shape": [128, 128, 128],
            "dtype": str(crop.dtype),
            "path": "brain/mni_crop128.nii.gz",
            "structures": {f"atlas {v} ({n} voxels)": acrop == v for n, v in picks},
            "dim": 3,
        }
    # 2D prompts: an HC18 fetal-head ultrasound PNG; the head is the filled annotation ellipse
    name = "002_HC"
    (root / "hc18").mkdir()
    shutil.copy(data / "hc18" / "images" / f"{name}.png", root / "hc18" / f"{name}.png")
    outline = np.asarray(medimg.read(data / "hc18" / "annotations" / f"{name}_Annotation.png").array)
    if outline.ndim == 3:
        outline = outline[..., 0]
    head = ndimage.binary_fill_holes(outline > 0)
    us = medimg.read(root / "hc18" / f"{name}.png")
    cases["hc18"] = {
        "source": f"{data / 'hc18' / 'images' / (name + '.png')} (HC18, CC BY 4.0); reference: the filled annotation",
        "shape": list(us.shape),
        "dtype": str(us.array.dtype),
        "path": f"hc18/{name}.png",
        "structures": {"fetal head": head},
        "dim": 2,
    }
    return cases


# ---------------------------------------------------------------------------------------------------- 1. browser


def _append_error(errors: list[str], e: Any) -> None:
    errors.append(str(e))


def first_image(base: str, case: dict[str, Any], timers: Timers) -> dict[str, Any]:
    from PIL import Image as PILImage
    from playwright.sync_api import sync_playwright

    runs: list[dict[str, Any]] = []
    bversion = ""
    with sync_playwright() as p:
        for i, path in enumerate(case["files"]):
            # a fresh browser per run: no GPU-process work left over from the previous (big) volume
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            bversion = browser.version
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                errors: list[str] = []
                page.on("pageerror", functools.partial(_append_error, errors))
                page.goto(base + "/")
                page.wait_for_function("document.body.dataset.ready === '1'", timeout=30000)
                page.evaluate(HOOK_JS)
                timers.take()
                load_before = load()
                page.evaluate(OPEN_JS, path)
                page.wait_for_function(
                    "window.__first !== undefined || window.__err !== undefined", timeout=180000, polling=50
                )
                if i == 0:  # the whole open (labels overlay, volumes table) once; on big volumes it takes minutes
                    page.wait_for_function(
                        "window.__done !== undefined || window.__err !== undefined", timeout=300000, polling=100
                    )
                # large images: a downsampled preview first, then the full volume swapped in (body.dataset.fullRes)
                page.wait_for_function(
                    "document.body.dataset.fullRes !== '0' || window.__err !== undefined", timeout=300000, polling=100
                )
                full_ms = page.evaluate("() => performance.now() - window.__t0")
                res = page.evaluate(
                    "() => ({first: window.__first, done: window.__done, added: window.__added,"
                    " levels: window.__levels, err: window.__err, preview: document.body.dataset.previewFactor})"
                )
                if res["err"]:
                    raise RuntimeError(f"openImage({path}) failed: {res['err']}")
                res_t = page.evaluate(TIMINGS_JS)
                levels = None
                if i == 0:  # check the read-back once with a real screenshot (the page is idle by now)
                    png = page.locator("#gl").screenshot(timeout=120000)
                    levels = len(np.unique(np.asarray(PILImage.open(io.BytesIO(png)).convert("L"))))
                    assert levels > 50, f"{path}: the canvas shows no image ({levels} grey levels)"
                assert not errors, errors
                post = next(t for t in res_t if t["url"] == "/api/images")
                vols = [t for t in res_t if "/volume" in t["url"]]
                vol = vols[0]  # the first volume request: the preview when the app downsamples a large image
                server = timers.take()
                runs.append(
                    {
                        "path": path,
                        "first_image_ms": round(res["first"], 1),
                        "full_resolution_in_ms": round(full_ms, 1),
                        "volume_url": vol["url"],
                        "open_done_ms": None if res["done"] is None else round(res["done"], 1),
                        "post_images_ms": round(post["response_end"] - post["start"], 1),
                        "volume_server_ms": round(vol["response_start"] - vol["request_start"], 1),
                        "volume_transfer_ms": round(vol["response_end"] - vol["response_start"], 1),
                        "volume_mb": round(vol["bytes"] / 1e6, 2),
                        "parse_ms": round(res["added"] - vol["response_end"], 1),
                        "first_draw_ms": round(res["first"] - res["added"], 1),
                        "nifti_bytes_ms": [round(v, 1) for v in server.get("nifti_bytes", [])],
                        "medimg_read_ms": [round(v, 1) for v in server.get("medimg.read", [])],
                        "grey_levels_canvas": res["levels"],
                        "grey_levels_screenshot": levels,
                        "load": load_before,
                    }
                )
                r = runs[-1]
                print(
                    f"  {path}: first image {r['first_image_ms']:.0f} ms (open done {r['open_done_ms']} ms; "
                    f"POST {r['post_images_ms']:.0f}, volume server {r['volume_server_ms']:.0f} + transfer "
                    f"{r['volume_transfer_ms']:.0f} ({r['volume_mb']} MB), parse {r['parse_ms']:.0f}, "
                    f"draw {r['first_draw_ms']:.0f}) load {load_before[0]}",
                    flush=True,
                )
                page.close()
            finally:
                browser.close()
    first = [r["first_image_ms"] for r in runs]
    keys = ("post_images_ms", "volume_server_ms", "volume_transfer_ms", "parse_ms", "first_draw_ms")
    return {
        "first_image_ms": stats(first),
        "full_resolution_in_ms": stats([r["full_resolution_in_ms"] for r in runs]),
        "what": case["source"],
        "open_done_ms_first_run": runs[0]["open_done_ms"],
        "median_breakdown_ms": {k: round(statistics.median(r[k] for r in runs), 1) for k in keys},
        "goal_ms": GOALS_MS["first_image"],
        "met": max(first) <= GOALS_MS["first_image"],
        "runs": runs,
        "chromium": bversion,
    }


def server_side(path: Path, store: Any) -> dict[str, Any]:
    """Where the server's part of opening a big volume goes (in-process, one run each): reading the file, and
    the served NIfTI bytes gzipped as now (medimg's writer, gzip level 1), uncompressed (``?gz=false``), and
    compressed with ISA-L (``isal.igzip``, level 1) from the uncompressed bytes."""
    from medimg.web.state import nifti_bytes

    out: dict[str, Any] = {"file": path.name}
    t0 = time.perf_counter()
    img = medimg.read(path)
    out["medimg_read_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    t0 = time.perf_counter()
    gz = nifti_bytes(img, True)
    out["nifti_gz_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    out["nifti_gz_mb"] = round(len(gz) / 1e6, 2)
    t0 = time.perf_counter()
    raw = nifti_bytes(img, False)
    out["nifti_raw_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    out["nifti_raw_mb"] = round(len(raw) / 1e6, 2)
    try:
        from isal import igzip

        t0 = time.perf_counter()
        fast = igzip.compress(raw, compresslevel=1)
        out["isal_gz_level1_ms"] = round(1000 * (time.perf_counter() - t0), 1) + out["nifti_raw_ms"]
        out["isal_gz_level1_mb"] = round(len(fast) / 1e6, 2)
    except ImportError:
        pass
    # the open session's whole-label-map work (run on every open and, via the app's volumes table, every change)
    sess = next((v for v in store.sessions.values() if v.name == path.name), None)
    if sess is not None:
        for key, fn in (
            ("summary_ms", sess.summary),
            ("volumes_ml_ms", sess.volumes_ml),
            ("labels_bytes_gz_ms", lambda: sess.labels_bytes(True)),
        ):
            t0 = time.perf_counter()
            fn()
            out[key] = round(1000 * (time.perf_counter() - t0), 1)
    return out


# ---------------------------------------------------------------------------------------------------- 2. prompts


def prompts(base: str, case: dict[str, Any], n: int, timers: Timers) -> dict[str, Any]:
    import httpx

    from medimg.interactive.simulate import next_click

    structures: dict[str, np.ndarray] = case["structures"]
    names = list(structures)
    rows: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=120) as c:
        info = c.post("/api/images", json={"path": case["path"]}).raise_for_status().json()
        sid = info["id"]
        shape = tuple(info["shape"])
        local = np.zeros(shape, np.uint16)  # the client's copy of the label map, kept from the region fetches
        obj = 0
        gt = structures[names[0]]
        timers.take()
        for k in range(n):
            if k % PER_OBJECT == 0:
                if k:  # undo this object's prompts and its creation: the next object starts on a clean map
                    for _ in range(PER_OBJECT + 1):
                        c.post(f"/api/images/{sid}/undo").raise_for_status()
                    local[:] = 0
                gt = structures[names[(k // PER_OBJECT) % len(names)]]
                obj = c.post(f"/api/images/{sid}/objects", json={"name": "bench"}).raise_for_status().json()["object"]
            click = next_click(local == obj, gt)
            if click is None:  # perfect already: a positive click at the structure's deepest point
                click = next_click(np.zeros_like(gt), gt)
            assert click is not None
            point = [int(v) for v in click.point]
            load_before = load()[0]
            t0 = time.perf_counter()
            r = c.post(
                f"/api/images/{sid}/objects/{obj}/prompts",
                json={"type": "click", "points": [point], "positive": bool(click.positive)},
            ).raise_for_status()
            t1 = time.perf_counter()
            res = r.json()
            (x0, y0, z0), (x1, y1, z1) = res["bbox"]
            box = f"{x0},{y0},{z0},{x1},{y1},{z1}"
            g = c.get(f"/api/images/{sid}/labels/region", params={"bbox": box}).raise_for_status()
            t2 = time.perf_counter()
            rshape = tuple(int(v) for v in g.headers["X-Shape"].split(","))
            region = np.frombuffer(g.content, dtype=g.headers["X-Dtype"]).reshape(rshape, order="F")
            sl = tuple(slice(a, a + s) for a, s in zip((x0, y0, z0), rshape, strict=False))
            local[sl] = region
            server = timers.take()
            mask = local == obj
            rows.append(
                {
                    "round_trip_ms": round(1000 * (t2 - t0), 1),
                    "post_ms": round(1000 * (t1 - t0), 1),
                    "region_ms": round(1000 * (t2 - t1), 1),
                    "server_ms": res["ms"],
                    "model_ms": round(sum(server.get("model", [])), 1),
                    "refine_3d_ms": round(sum(server.get("refine_3d", [])), 1),
                    "region_bytes": len(g.content),
                    "box_shape": list(rshape),
                    "positive": bool(click.positive),
                    "dice": round(float(2 * (mask & gt).sum() / max(1, mask.sum() + gt.sum())), 3),
                    "load": load_before,
                }
            )
    rt = [r["round_trip_ms"] for r in rows]
    goal = GOALS_MS["prompt_3d" if case["dim"] == 3 else "prompt_2d"]
    med = {k: round(statistics.median(r[k] for r in rows), 1) for k in ("server_ms", "model_ms", "refine_3d_ms")}
    med["http_and_state_ms"] = round(
        statistics.median(r["round_trip_ms"] - r["model_ms"] - r["refine_3d_ms"] for r in rows), 1
    )
    return {
        "round_trip_ms": stats(rt),
        "post_ms": stats([r["post_ms"] for r in rows]),
        "region_ms": stats([r["region_ms"] for r in rows]),
        "median_breakdown_ms": med,
        "region_bytes_median": int(statistics.median(r["region_bytes"] for r in rows)),
        "goal_ms": goal,
        "met": max(rt) <= goal,
        "median_met": statistics.median(rt) <= goal,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------- 3. concurrency


def concurrent(base: str, path: str, n: int = 50) -> dict[str, Any]:
    import httpx

    with httpx.Client(base_url=base, timeout=60) as c:
        sid = c.post("/api/images", json={"path": path}).raise_for_status().json()["id"]
        ref = c.get(f"/api/images/{sid}/volume").raise_for_status().content  # the reference bytes

    async def run() -> tuple[list[tuple[int, float, bool]], float]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as ac:

            async def one(i: int) -> tuple[int, float, bool]:
                t0 = time.perf_counter()
                url = "/api/health" if i % 2 == 0 else f"/api/images/{sid}/volume"
                r = await ac.get(url)
                ok = r.json()["status"] == "ok" if i % 2 == 0 else r.content == ref
                return r.status_code, 1000 * (time.perf_counter() - t0), ok

            t0 = time.perf_counter()
            out = await asyncio.gather(*(one(i) for i in range(n)))
            return list(out), 1000 * (time.perf_counter() - t0)

    load_before = load()
    results, total = asyncio.run(run())
    served = sum(1 for code, _, ok in results if code == 200 and ok)
    lat = [ms for _, ms, _ in results]
    return {
        "requests": n,
        "kinds": f"{n // 2} GET /api/health + {n - n // 2} GET .../volume ({len(ref) / 1e6:.2f} MB each, {path})",
        "served_ok": served,
        "all_served": served == n,
        "total_ms": round(total, 1),
        "latency_ms": stats(lat),
        "load": load_before,
    }


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=3, help="opens per image in the browser (fresh tabs)")
    ap.add_argument("--prompts", type=int, default=20, help="prompts per case")
    ap.add_argument("--no-brain", action="store_true", help="skip the 128^3 brain crop")
    ap.add_argument("--quiet-load", type=float, default=1.0, help="wait for a 1-minute load average below this")
    ap.add_argument("--quiet-wait", type=float, default=300, help="... for at most this many seconds")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: results/web_speed*.json)")
    ap.add_argument(
        "--only", choices=("first-image",), default=None, help="run only part 1 (first rendered image) for the CTs"
    )
    args = ap.parse_args()
    if args.out is None:
        name = "web_speed_first_image.json" if args.only else "web_speed.json"
        args.out = ROOT / "benchmarks" / "results" / name
    if not CHROMIUM.exists():
        raise SystemExit("Debian's chromium (/usr/bin/chromium) is needed: apt-get install chromium")
    t_wait = time.perf_counter()
    while os.getloadavg()[0] >= args.quiet_load and time.perf_counter() - t_wait < args.quiet_wait:
        time.sleep(5)  # the numbers are only meaningful when this is the only heavy thing running
    waited = round(time.perf_counter() - t_wait, 1)
    t_start = time.perf_counter()
    load_start = load()
    print(f"web_speed: load average {load_start} on {os.cpu_count()} cores", flush=True)

    import medimg.web.state as web_state
    from medimg.interactive import session as isession
    from medimg.interactive.promptable import PromptableModel

    timers = Timers()
    timers.wrap(web_state, "nifti_bytes", "nifti_bytes")
    timers.wrap(medimg, "read", "medimg.read")
    timers.wrap(isession, "refine_3d", "refine_3d")
    timers.wrap(PromptableModel, "segment_volume", "model")
    timers.wrap(PromptableModel, "segment_slice", "model")

    out: dict[str, Any] = {"benchmark": "web_speed"}
    with tempfile.TemporaryDirectory(prefix="medimg-web-speed-") as tmp:
        root = Path(tmp) / "served"
        root.mkdir()
        cases = prepare(args.data, root, args.repeat, not args.no_brain)
        print(f"data ready in {time.perf_counter() - t_start:.1f} s", flush=True)
        with serve(root) as (base, app):
            # as `medimg serve` does: load the promptable model and libraries in the background at start
            warm = threading.Thread(target=app.state.store.warm_up, daemon=True)
            t0 = time.perf_counter()
            warm.start()

            print("1. time to first rendered image (headless Chromium, SwiftShader WebGL2)", flush=True)
            browser: dict[str, Any] = {}
            for key in ("totalseg_ct", "synthetic_ct"):
                print(f" {key}", flush=True)
                browser[key] = first_image(base, cases[key], timers)
            warm.join()
            warm_s = time.perf_counter() - t0
            server = server_side(root / cases["synthetic_ct"]["files"][0], app.state.store)
            print(f"  server side, synthetic CT: {server}", flush=True)

            print("2. prompt round trips (POST prompt + GET labels/region)", flush=True)
            prompt_res: dict[str, Any] = {}
            for key in ("hippocampus", "brain_crop", "hc18"):
                if key in cases and not args.only:
                    prompt_res[key] = prompts(base, cases[key], args.prompts, timers)
                    r = prompt_res[key]
                    print(
                        f"  {key}: round trip {r['round_trip_ms']} (median breakdown {r['median_breakdown_ms']}) "
                        f"goal {r['goal_ms']:.0f} ms: {'met' if r['met'] else 'MISSED'}",
                        flush=True,
                    )

            print("3. 50 concurrent requests", flush=True)
            conc = concurrent(base, cases["totalseg_ct"]["files"][0]) if not args.only else {}
            print(f"  {conc}", flush=True)
        timers.restore()

    for c in cases.values():
        if "structures" in c:
            c["structures"] = {k: int(v.sum()) for k, v in c["structures"].items()}
    chromium = browser["totalseg_ct"]["chromium"]
    out.update(
        {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine(),
            "versions": versions(chromium),
            "git_commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
            "load_average_start": load_start,
            "waited_for_quiet_s": waited,
            "load_average_end": load(),
            "warm_up_s": round(warm_s, 2),
            "goals_ms": GOALS_MS,
            "data": cases,
            "first_image": browser,
            "server_side_synthetic": server,
            "prompts": prompt_res,
            "concurrent": conc,
            "wall_s": round(time.perf_counter() - t_start, 1),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print_table(out)
    print(f"wrote {args.out}")


def print_table(out: dict[str, Any]) -> None:
    m = out["machine"]
    print(f"\n{out['date']} · {m['cores']} cores ({m['cpu']}), Python {m['python']} · load {out['load_average_start']}")
    print(f"wall time {out['wall_s']} s")
    print(f"{'measure (ms)':<44} {'min':>8} {'median':>8} {'max':>8}  goal     met")

    def row(name: str, s: dict[str, float], goal: float, met: bool) -> None:
        print(f"{name:<44} {s['min']:>8} {s['median']:>8} {s['max']:>8}  <= {goal:<5.0f} {met}")

    for key, r in out["first_image"].items():
        row("first image " + key, r["first_image_ms"], r["goal_ms"], r["met"])
    for key, r in out["prompts"].items():
        row("prompt round trip " + key, r["round_trip_ms"], r["goal_ms"], r["met"])
    c = out["concurrent"]
    if c:
        print(f"50 concurrent requests: {c['served_ok']}/{c['requests']} served in {c['total_ms']} ms")
    for key, r in out["first_image"].items():
        s = r["full_resolution_in_ms"]
        print(f"full resolution in, {key}: {s['min']} / {s['median']} / {s['max']} ms")


if __name__ == "__main__":
    main()
