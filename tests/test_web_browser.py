"""End to end in a real headless browser: `medimg serve`'s app (NiiVue, WebGL2 through SwiftShader) driven by
Playwright with Debian's Chromium. A person's session on a real hippocampus MRI: open it from the worklist, new
object, click inside the anterior hippocampus on the canvas (corrective clicks where the mask is wrong, as a user
would), Dice >= 0.7 against the reference label, undo until the mask is gone, redo, save, and read the saved file
back with the image's exact geometry."""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage

import medimg
from medimg.interactive.simulate import next_click

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed: apt-get install chromium"
)

DATA = Path(__file__).parent / "data" / "hippocampus"
CASE = "hippocampus_006"
SCREENSHOT = Path(__file__).parent.parent / "docs" / "images" / "workbench.png"
LAUNCH_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The real server (create_app on a temporary root holding one hippocampus case) on a free port."""
    import uvicorn

    from medimg.web.server import create_app

    root = tmp_path / "cases"
    root.mkdir()
    shutil.copy(DATA / "imagesTr" / f"{CASE}.nii.gz", root / f"{CASE}.nii.gz")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app([root]), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", root
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _labels(base: str, image_id: str, tmp: Path) -> np.ndarray:
    """The server's current label map, read with medimg (what the browser loads as the overlay)."""
    import httpx

    r = httpx.get(f"{base}/api/images/{image_id}/labels", timeout=30)
    r.raise_for_status()
    p = tmp / "current_labels.nii.gz"
    p.write_bytes(r.content)
    return np.asarray(medimg.read(p).array)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))


def test_browser_session(served: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, root = served
    image = medimg.read(root / f"{CASE}.nii.gz")
    gt = np.asarray(medimg.read_labels(DATA / "labelsTr" / f"{CASE}.nii.gz").array) == 1
    t_start = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            page.wait_for_function("document.body.dataset.ready === '1'", timeout=20000)

            # Open the case from the worklist.
            page.locator("#worklist li.item", has_text=CASE).click()
            page.wait_for_function("document.body.dataset.imageId !== undefined", timeout=20000)
            image_id = page.evaluate("document.body.dataset.imageId")
            info: dict[str, Any] = page.evaluate("workbench.state.image")
            assert info["shape"] == list(image.shape)
            # The canvas rendered the image (WebGL2 through SwiftShader): many distinct grey levels.
            shot = np.asarray(PILImage.open(io.BytesIO(page.locator("#gl").screenshot())).convert("L"))
            assert len(np.unique(shot)) > 50, "the canvas shows no image"

            def wait_op(done: int) -> None:
                page.wait_for_function(f"workbench.state.opsDone >= {done}", timeout=30000)

            def click_voxel(vox: tuple[int, ...], positive: bool) -> None:
                """Show the voxel's slices, then click its centre on the axial tile with the real mouse."""
                xy = page.evaluate(
                    "v => { workbench.moveCrosshairToVoxel(v); return workbench.voxelToClient(v); }", list(vox)
                )
                assert xy is not None, f"voxel {vox} is on no 2D tile"
                done = page.evaluate("workbench.state.opsDone")
                if not positive:
                    page.keyboard.down("Shift")
                page.mouse.click(xy["x"], xy["y"])
                if not positive:
                    page.keyboard.up("Shift")
                wait_op(done + 1)
                sent = page.evaluate("workbench.state.lastPrompt")
                assert sent["voxel"] == list(vox) and sent["positive"] == positive  # canvas pixel -> exact voxel

            # New object (button), then clicks in prompt mode; corrective clicks where the mask is wrong.
            done = page.evaluate("workbench.state.opsDone")
            page.locator("#new-object").click()
            page.wait_for_function("workbench.state.object !== null", timeout=10000)
            obj = int(page.evaluate("workbench.state.object"))
            assert page.evaluate("workbench.state.promptMode") is True
            clicks = 0
            mask = np.zeros_like(gt)
            dice = 0.0
            while dice < 0.7 and clicks < 4:
                c = next_click(mask, gt)
                assert c is not None
                click_voxel(tuple(int(v) for v in c.point), c.positive)
                clicks += 1
                mask = _labels(base, image_id, tmp_path) == obj
                dice = _dice(mask, gt)
            assert dice >= 0.7, f"Dice {dice:.3f} after {clicks} clicks"
            before_undo = mask.copy()
            latency = page.locator("#latency").inner_text()
            assert "ms" in latency
            table = page.locator("#volumes tbody").inner_text()
            assert str(obj) in table

            # Undo (Ctrl+Z) until the mask is gone, then redo (Ctrl+Y) the same number of times.
            undos = 0
            while mask.any():
                assert undos < clicks + 1, "undo did not remove the mask"
                done = page.evaluate("workbench.state.opsDone")
                page.keyboard.press("Control+z")
                wait_op(done + 1)
                undos += 1
                mask = _labels(base, image_id, tmp_path) == obj
            for _ in range(undos):
                done = page.evaluate("workbench.state.opsDone")
                page.keyboard.press("Control+y")
                wait_op(done + 1)
            mask = _labels(base, image_id, tmp_path) == obj
            assert np.array_equal(mask, before_undo)

            # The crosshair readout shows the voxel and its intensity.
            page.evaluate(f"workbench.moveCrosshairToVoxel({list(int(v) for v in ndimage.center_of_mass(gt))})")
            readout = page.locator("#readout").inner_text()
            assert "voxel (" in readout and "LPS mm (" in readout

            page.screenshot(path=str(tmp_path / "workbench.png"))
            if os.environ.get("MEDIMG_UPDATE_SCREENSHOTS"):
                shutil.copy(tmp_path / "workbench.png", SCREENSHOT)

            # Save next to the image (the Save button with the suggested path).
            assert page.locator("#save-path").input_value() == f"{CASE}_seg.nii.gz"
            done = page.evaluate("workbench.state.opsDone")
            page.locator("#save").click()
            wait_op(done + 1)
            assert not errors, errors
            status = page.locator("#status").inner_text()
            assert "saved" in status, status
        finally:
            browser.close()
    saved = medimg.read_labels(root / f"{CASE}_seg.nii.gz")
    assert saved.shape == image.shape
    np.testing.assert_allclose(saved.spacing, image.spacing)
    np.testing.assert_allclose(saved.origin, image.origin)
    np.testing.assert_allclose(saved.direction, image.direction)
    assert _dice(np.asarray(saved.array) == obj, gt) >= 0.7
    assert time.monotonic() - t_start < 60
