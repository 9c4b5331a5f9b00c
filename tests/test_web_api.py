"""The workbench HTTP API (medimg.web) end to end with FastAPI's TestClient on copies of the hippocampus cases."""

from __future__ import annotations

import gzip
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import medimg
from medimg.interactive.simulate import next_click
from medimg.web import create_app

from conftest import SHARED, needs_shared

DATA = Path(__file__).parent / "data" / "hippocampus"
CASE = "hippocampus_003.nii.gz"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("served")
    for sub in ("imagesTr", "labelsTr"):
        (r / sub).mkdir()
        for f in ("hippocampus_001.nii.gz", CASE):
            shutil.copyfile(DATA / sub / f, r / sub / f)
    img = medimg.read(DATA / "imagesTr" / CASE)
    medimg.write(img, r / "case.nrrd")
    medimg.write(img, r / "case.mha")
    return r


@pytest.fixture(scope="module")
def client(root: Path):
    with TestClient(create_app([root])) as c:
        yield c


def _open(client: TestClient, path: str) -> dict:
    r = client.post("/api/images", json={"path": path})
    assert r.status_code == 200, r.text
    return r.json()


def _labels(client: TestClient, sid: str, tmp: Path) -> np.ndarray:
    r = client.get(f"/api/images/{sid}/labels")
    assert r.status_code == 200
    p = tmp / f"l{time.perf_counter_ns()}.nii.gz"
    p.write_bytes(r.content)
    return medimg.read_labels(p).array


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / (a.sum() + b.sum()))


def test_health_and_worklist(client: TestClient) -> None:
    r = client.get("/api/health")
    assert r.json() == {"status": "ok", "version": medimg.__version__}
    wl = {e["path"]: e for e in client.get("/api/worklist").json()}
    assert f"imagesTr/{CASE}" in wl and "case.nrrd" in wl and "case.mha" in wl
    assert not any(p.startswith("labelsTr") for p in wl)
    assert wl[f"imagesTr/{CASE}"]["labels"] == [f"labelsTr/{CASE}"]
    assert wl[f"imagesTr/{CASE}"]["status"] == "new"
    r = client.post("/api/worklist/status", json={"path": "case.mha", "status": "done"})
    assert r.status_code == 200 and r.json()["status"] == "done"
    assert {e["path"]: e for e in client.get("/api/worklist").json()}["case.mha"]["status"] == "done"
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("name", [f"imagesTr/{CASE}", "case.nrrd", "case.mha"])
def test_open_and_volume_geometry(client: TestClient, name: str, tmp_path: Path, root: Path) -> None:
    info = _open(client, name)
    img = medimg.read(root / name)
    assert info["shape"] == list(img.shape)
    np.testing.assert_allclose(info["spacing"], img.spacing)
    np.testing.assert_allclose(info["origin"], img.origin, atol=1e-5)
    np.testing.assert_allclose(info["direction"], img.direction, atol=1e-6)
    r = client.get(f"/api/images/{info['id']}/volume")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.content[:2] == b"\x1f\x8b"
    p = tmp_path / "v.nii.gz"
    p.write_bytes(r.content)
    back = medimg.read(p)
    np.testing.assert_array_equal(back.array, img.array)  # NIfTI voxel (i, j, k) == medimg (x, y, z)
    np.testing.assert_allclose(back.origin, img.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, img.direction, atol=1e-6)
    assert gzip.decompress(r.content)[:4] == (348).to_bytes(4, "little")  # NIfTI-1 header


def test_downsampled_volume_geometry(tmp_path: Path) -> None:
    """``?downsample=2``: shape halved, spacing doubled, same direction, voxel (0,0,0) at the world centre of the
    first 2x2x2 block (an oblique direction, so a wrong origin shift shows), values the block means."""
    img = medimg.read(DATA / "imagesTr" / CASE)
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    img = medimg.Image(img.array.astype(np.int16), (0.8, 0.9, 1.3), (10.0, -20.0, 5.0), rot)
    medimg.write(img, tmp_path / "oblique.nii.gz")
    with TestClient(create_app([tmp_path])) as c2:
        sid = _open(c2, "oblique.nii.gz")["id"]
        r = c2.get(f"/api/images/{sid}/volume?downsample=2&gz=false")
        assert r.status_code == 200 and r.content[:4] == (348).to_bytes(4, "little")
        assert c2.get(f"/api/images/{sid}/volume?downsample=2&gz=false").content == r.content  # cached
        assert c2.get(f"/api/images/{sid}/volume?downsample=0").status_code == 422
        assert c2.get(f"/api/images/{sid}/volume?downsample=x").status_code == 422
    p = tmp_path / "ds.nii"
    p.write_bytes(r.content)
    ds = medimg.read(p)
    assert list(ds.shape) == [n // 2 for n in img.shape]
    np.testing.assert_allclose(ds.spacing, np.asarray(img.spacing) * 2, rtol=1e-5)
    np.testing.assert_allclose(ds.direction, img.direction, atol=1e-5)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    np.testing.assert_allclose(ds.index_to_world((0, 0, 0)), img.index_to_world(corners).mean(axis=0), atol=1e-3)
    far = np.array(ds.shape) - 1  # and the last block, so spacing and direction act together
    np.testing.assert_allclose(ds.index_to_world(far), img.index_to_world(2 * far + corners).mean(axis=0), atol=1e-3)
    block = img.array[:2, :2, :2].astype(float).mean()
    assert abs(int(ds.array[0, 0, 0]) - block) <= 0.5


def test_prompts_objects_undo_redo_save(client: TestClient, root: Path, tmp_path: Path) -> None:
    info = _open(client, f"imagesTr/{CASE}")
    sid = info["id"]
    ref = medimg.read_labels(root / "labelsTr" / CASE).array
    gt = ref == 1
    obj = client.post(f"/api/images/{sid}/objects", json={"name": "anterior"}).json()["object"]
    assert obj == 1
    c = [int(v) for v in np.argwhere(gt).mean(0).round()]
    assert gt[tuple(c)]
    times = []
    t0 = time.perf_counter()
    r = client.post(f"/api/images/{sid}/objects/{obj}/prompts", json={"type": "click", "points": [c], "positive": True})
    times.append(time.perf_counter() - t0)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["voxels"] > 0 and len(out["bbox"]) == 2 and out["ms"] > 0
    mask = _labels(client, sid, tmp_path) == obj
    assert int(mask.sum()) == out["voxels"]
    lo, hi = np.array(out["bbox"])
    inside = np.zeros_like(mask)
    inside[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = True
    assert not np.any(mask & ~inside)  # the first prompt's changes lie in its box
    scores = [dice(mask, gt)]
    for _ in range(3):  # corrective clicks, simulated as a user would place them
        if scores[-1] >= 0.7:
            break
        nc = next_click(mask, gt)
        assert nc is not None
        body = {"type": "click", "points": [list(nc.point)], "positive": nc.positive}
        t0 = time.perf_counter()
        assert client.post(f"/api/images/{sid}/objects/{obj}/prompts", json=body).status_code == 200
        times.append(time.perf_counter() - t0)
        mask = _labels(client, sid, tmp_path) == obj
        scores.append(dice(mask, gt))
    print(f"\nclick Dice {[round(s, 3) for s in scores]}; round trips {[round(1000 * t) for t in times]} ms")
    assert scores[-1] >= 0.7

    # a second object never overwrites the first
    before = _labels(client, sid, tmp_path)
    obj2 = client.post(f"/api/images/{sid}/objects", json={"name": "posterior"}).json()["object"]
    assert obj2 == 2
    far = [n - 1 for n in info["shape"]]
    box = {"type": "box", "points": [[0, 0, 0], far]}  # the whole volume: overlaps object 1
    assert client.post(f"/api/images/{sid}/objects/{obj2}/prompts", json=box).status_code == 200
    after = _labels(client, sid, tmp_path)
    np.testing.assert_array_equal(after == 1, before == 1)
    assert np.any(after == 2)
    # 2D scribble on one slice, then undo / redo
    z = c[2]
    scr = {"type": "scribble", "points": [[c[0] - 2, c[1], z], [c[0] + 2, c[1], z]], "positive": False}
    assert client.post(f"/api/images/{sid}/objects/{obj}/prompts", json=scr).status_code == 200
    with_scribble = _labels(client, sid, tmp_path)
    und = client.post(f"/api/images/{sid}/undo").json()
    n = und["voxels"]
    assert n == int(np.sum(with_scribble != after))
    (x0, y0, z0), (x1, y1, z1) = und["bbox"]  # every voxel the undo changed lies in the box it reports
    changed = with_scribble != after
    assert changed[x0 : x1 + 1, y0 : y1 + 1, z0 : z1 + 1].sum() == n
    np.testing.assert_array_equal(_labels(client, sid, tmp_path), after)
    assert client.post(f"/api/images/{sid}/redo").json()["voxels"] == n
    np.testing.assert_array_equal(_labels(client, sid, tmp_path), with_scribble)
    assert client.post(f"/api/images/{sid}/undo").status_code == 200
    vols = client.get(f"/api/images/{sid}/volumes").json()
    assert vols["names"] == {"1": "anterior", "2": "posterior"}
    assert vols["volumes_ml"]["1"] == pytest.approx(np.sum(after == 1) * 1e-3)
    # region of the changed box, raw (x fastest)
    r = client.get(f"/api/images/{sid}/labels/region", params={"bbox": ",".join(map(str, [0, 0, 0, *far]))})
    assert r.headers["x-shape"] == ",".join(map(str, info["shape"]))
    reg = np.frombuffer(r.content, r.headers["x-dtype"]).reshape(info["shape"], order="F")
    np.testing.assert_array_equal(reg, after)

    # save: NIfTI and Slicer seg.nrrd with the image's exact geometry
    img = medimg.read(root / "imagesTr" / CASE)
    for name in ("out/anno.nii.gz", "out/anno.seg.nrrd"):
        (root / "out").mkdir(exist_ok=True)
        r = client.post(f"/api/images/{sid}/save", json={"path": name})
        assert r.status_code == 200, r.text
        back = medimg.read_labels(root / name)
        np.testing.assert_array_equal(back.array, after)
        assert back.spacing == img.spacing
        np.testing.assert_allclose(back.origin, img.origin, atol=1e-6)
        np.testing.assert_allclose(back.direction, img.direction, atol=1e-6)
    assert medimg.read_labels(root / "out/anno.seg.nrrd").names[1] == "anterior"
    assert client.post(f"/api/images/{sid}/save", json={"path": f"imagesTr/{CASE}"}).status_code == 403
    assert client.post(f"/api/images/{sid}/save", json={"path": "nope/x.nii.gz"}).status_code == 404
    assert client.post(f"/api/images/{sid}/save", json={"path": "out/x.xyz"}).status_code == 422

    # autosave: a new server on the same folder restores the label map and names
    client.app.state.store.flush()  # type: ignore[attr-defined]
    assert (root / "imagesTr" / ".medimg" / f"{CASE}.labels.nii.gz").exists()
    assert {e["path"]: e for e in client.get("/api/worklist").json()}[f"imagesTr/{CASE}"]["status"] == "in progress"
    with TestClient(create_app([root])) as c2:
        info2 = c2.post("/api/images", json={"path": f"imagesTr/{CASE}"}).json()
        assert info2["restored"] and info2["labels"] == {"1": "anterior", "2": "posterior"}
        np.testing.assert_array_equal(_labels(c2, info2["id"], tmp_path), after)


def test_put_labels_segment_and_errors(client: TestClient, root: Path, tmp_path: Path) -> None:
    sid = _open(client, "imagesTr/hippocampus_001.nii.gz")["id"]
    ref = medimg.read_labels(root / "labelsTr" / "hippocampus_001.nii.gz")
    r = client.put(f"/api/images/{sid}/labels", content=(root / "labelsTr" / "hippocampus_001.nii.gz").read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["volumes_ml"] == pytest.approx({str(k): v for k, v in ref.volumes_ml().items()})
    np.testing.assert_array_equal(_labels(client, sid, tmp_path), ref.array)
    bad = medimg.LabelMap(np.zeros((4, 4, 4), np.uint8))
    medimg.write(bad, tmp_path / "bad.nii")
    assert client.put(f"/api/images/{sid}/labels", content=(tmp_path / "bad.nii").read_bytes()).status_code == 422
    r = client.post(f"/api/images/{sid}/segment", json={"model": "hippocampus"})
    assert r.status_code == 200, r.text
    seg = r.json()
    assert set(seg["labels"]) == {"1", "2"} and seg["volumes_ml"]["1"] > 0 and seg["ms"] > 0
    got = _labels(client, sid, tmp_path)
    assert dice(got > 0, ref.array > 0) > 0.7
    assert client.post(f"/api/images/{sid}/undo").json()["voxels"] > 0  # back to the uploaded labels
    np.testing.assert_array_equal(_labels(client, sid, tmp_path), ref.array)
    assert client.post(f"/api/images/{sid}/segment", json={"model": "/etc"}).status_code == 403
    assert (
        client.post(f"/api/images/{sid}/objects/9/prompts", json={"type": "click", "points": [[1, 1, 1]]}).status_code
        == 404
    )
    obj = client.post(f"/api/images/{sid}/objects", json={"name": "x"}).json()["object"]
    out = client.post(f"/api/images/{sid}/objects/{obj}/prompts", json={"type": "click", "points": [[99, 1, 1]]})
    assert out.status_code == 422 and "outside" in out.json()["detail"]
    assert client.get("/api/images/nope/volume").status_code == 404


def test_path_safety(client: TestClient, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.nii.gz"
    shutil.copyfile(DATA / "imagesTr" / CASE, outside)
    os.symlink(outside, root / "escape.nii.gz")
    try:
        for p in ("../outside.nii.gz", str(outside), "escape.nii.gz", "imagesTr/../../x.nii.gz", "/etc/passwd"):
            assert client.post("/api/images", json={"path": p}).status_code == 403, p
        assert client.post("/api/images", json={"path": "missing.nii.gz"}).status_code == 404
        sid = _open(client, f"imagesTr/{CASE}")["id"]
        for p in ("../evil.nii.gz", str(tmp_path / "evil.nii.gz"), "escape.nii.gz"):
            assert client.post(f"/api/images/{sid}/save", json={"path": p}).status_code == 403, p
        assert not (tmp_path / "evil.nii.gz").exists()
        assert client.get("/api/health", headers={"Origin": "http://evil.example"}).status_code == 403
    finally:
        (root / "escape.nii.gz").unlink()


def test_token_and_limits(root: Path) -> None:
    with TestClient(create_app([root], token="s3cret", max_upload_bytes=1000)) as c:
        assert c.get("/api/health").status_code == 401
        assert c.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        h = {"Authorization": "Bearer s3cret"}
        assert c.get("/api/health", headers=h).status_code == 200
        sid = c.post("/api/images", json={"path": f"imagesTr/{CASE}"}, headers=h).json()["id"]
        assert c.put(f"/api/images/{sid}/labels", content=b"x" * 2000, headers=h).status_code == 413
        big = {"path": "x" * (5 * 1024 * 1024)}
        assert c.post("/api/images", json=big, headers=h).status_code == 413

        def chunks():
            for _ in range(4):
                yield b"y" * 400

        assert c.put(f"/api/images/{sid}/labels", content=chunks(), headers=h).status_code == 413


def test_concurrent_requests(client: TestClient) -> None:
    sid = _open(client, f"imagesTr/{CASE}")["id"]
    urls = ["/api/health"] * 25 + [f"/api/images/{sid}/volume"] * 25
    with ThreadPoolExecutor(50) as ex:
        codes = list(ex.map(lambda u: client.get(u).status_code, urls))
    assert codes == [200] * 50


def test_prompts_refine_a_segmented_object(client: TestClient, root: Path, tmp_path: Path) -> None:
    from scipy import ndimage

    (root / "refine").mkdir(exist_ok=True)
    shutil.copyfile(DATA / "imagesTr" / CASE, root / "refine" / CASE)
    sid = _open(client, f"refine/{CASE}")["id"]
    assert client.post(f"/api/images/{sid}/segment", json={"model": "hippocampus"}).status_code == 200
    seg = _labels(client, sid, tmp_path)
    one = seg == 1
    assert one.any() and np.any(seg == 2)
    url = f"/api/images/{sid}/objects/1/prompts"
    # a negative click at the core of object 1: it trims object 1, object 2 is untouched
    core = [int(v) for v in np.unravel_index(np.argmax(ndimage.distance_transform_edt(one)), one.shape)]
    r = client.post(url, json={"type": "click", "points": [core], "positive": False})
    assert r.status_code == 200, r.text
    cut = _labels(client, sid, tmp_path)
    assert r.json()["voxels"] == int(np.sum(cut == 1))
    assert cut[tuple(core)] == 0 and 0.5 * one.sum() < np.sum(cut == 1) < one.sum()
    np.testing.assert_array_equal(cut == 2, seg == 2)
    removed, added = int(np.sum(one & (cut != 1))), int(np.sum((cut == 1) & ~one))
    print(f"\nnegative click in a segmented object: {removed} voxels removed, {added} added of {int(one.sum())}")
    assert removed > 3 * added  # mostly removals (the model may reshape the edge a little)
    assert client.post(f"/api/images/{sid}/undo").json()["voxels"] == int(np.sum(cut != seg))
    np.testing.assert_array_equal(_labels(client, sid, tmp_path), seg)  # exactly the segmented mask
    # a positive click just outside object 1 (in background) grows it
    ring = ndimage.binary_dilation(one, iterations=2) & (seg == 0)
    out = [int(v) for v in np.argwhere(ring)[len(np.argwhere(ring)) // 2]]
    r = client.post(url, json={"type": "click", "points": [out], "positive": True})
    assert r.status_code == 200, r.text
    grown = _labels(client, sid, tmp_path)
    assert grown[tuple(out)] == 1 and np.sum(grown == 1) > one.sum()
    np.testing.assert_array_equal(grown == 2, seg == 2)
    assert client.post(f"/api/images/{sid}/undo").status_code == 200
    np.testing.assert_array_equal(_labels(client, sid, tmp_path), seg)
    assert client.post(f"/api/images/{sid}/redo").status_code == 200  # the session follows the label map
    np.testing.assert_array_equal(_labels(client, sid, tmp_path), grown)


def _eroded(path: Path) -> medimg.LabelMap:
    from scipy import ndimage

    lab = medimg.read_labels(path)
    arr = np.zeros_like(lab.array)
    for k in (1, 2):
        arr[ndimage.binary_erosion(lab.array == k)] = k
    return medimg.LabelMap(arr, lab.spacing, lab.origin, lab.direction, names=lab.names)


def test_review_difference_and_evaluate_report(client: TestClient, root: Path, tmp_path: Path) -> None:
    from urllib.parse import quote

    (root / "preds").mkdir(exist_ok=True)
    for f in ("hippocampus_001.nii.gz", CASE):  # predictions: the reference labels eroded by one voxel
        medimg.write(_eroded(root / "labelsTr" / f), root / "preds" / f)
    ref = medimg.read_labels(root / "labelsTr" / CASE).array
    pred = medimg.read_labels(root / "preds" / CASE).array
    r = client.post("/api/review", json={"prediction": f"preds/{CASE}", "reference": f"labelsTr/{CASE}"})
    assert r.status_code == 200, r.text
    rv = r.json()
    assert rv["image"] == f"imagesTr/{CASE}"  # the image the reference lies beside
    m = {x["label"]: x for x in rv["metrics"]}
    for k in (1, 2):
        d = 2 * np.sum((pred == k) & (ref == k)) / (np.sum(pred == k) + np.sum(ref == k))
        assert m[k]["dice"] == pytest.approx(d) and 0.3 < d < 1 and m[k]["hd95_mm"] > 0
    vox = rv["difference"]["voxels"]
    assert vox == {"1": int(np.sum(pred > 0)), "2": 0, "3": int(np.sum((ref > 0) & (pred == 0)))}
    assert rv["difference"]["names"]["3"] == "reference only (false negative)"
    assert rv["urls"]["labels"] == f"/api/images/{rv['id']}/labels"
    diff = _labels(client, rv["id"], tmp_path)
    np.testing.assert_array_equal(diff, np.where(pred > 0, 1, np.where(ref > 0, 3, 0)))
    p = tmp_path / "vol.nii.gz"
    p.write_bytes(client.get(rv["urls"]["volume"]).content)
    np.testing.assert_array_equal(medimg.read(p).array, medimg.read(root / "imagesTr" / CASE).array)
    # one label, the swapped pair (false positives), another grid, and the path rules
    one = client.post(
        "/api/review", json={"prediction": f"labelsTr/{CASE}", "reference": f"preds/{CASE}", "label": 2}
    ).json()
    assert [x["label"] for x in one["metrics"]] == [2]
    assert one["difference"]["voxels"]["2"] == int(np.sum((ref == 2) & (pred != 2)))
    medimg.write(medimg.LabelMap(ref[:-2].copy()), root / "preds" / "small.nii.gz")
    r = client.post("/api/review", json={"prediction": "preds/small.nii.gz", "reference": f"labelsTr/{CASE}"})
    assert r.status_code == 422 and "same voxel grid" in r.json()["detail"]
    for bad, code in (("../x.nii.gz", 403), ("/etc/passwd", 403), ("preds/missing.nii.gz", 404)):
        assert client.post("/api/review", json={"prediction": bad, "reference": f"labelsTr/{CASE}"}).status_code == code
    (root / "preds" / "small.nii.gz").unlink()

    # evaluate a folder: summary + report, the report served read-only as HTML
    body = {"predictions": "preds", "references": "labelsTr", "output_dir": "evaluation"}
    r = client.post("/api/evaluate", json=body)
    assert r.status_code == 200, r.text
    ev = r.json()
    assert ev["n_cases"] == 2 and ev["report"] == "evaluation/report.html"
    assert ev["report_url"] == "/api/files?path=" + quote("evaluation/report.html", safe="")
    dice_mean = ev["classes"]["1"]["dice"]["mean"]
    assert 0.3 < dice_mean < 1
    page = client.get(ev["report_url"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == "sandbox" and b"<html" in page.content.lower()
    assert client.get("/api/files", params={"path": "evaluation/summary.json"}).json()["n_cases"] == 2
    for bad, code in (("../x.html", 403), ("/etc/passwd", 403), ("evaluation", 404), ("evaluation/none.html", 404)):
        assert client.get("/api/files", params={"path": bad}).status_code == code, bad
    for out, code in ((str(tmp_path / "ev"), 403), ("preds/ev", 403), ("nope/ev", 404)):
        assert client.post("/api/evaluate", json={**body, "output_dir": out}).status_code == code, out
    assert not (tmp_path / "ev").exists()
    assert client.post("/api/evaluate", json={**body, "predictions": "../x"}).status_code == 403


def test_lasso_encloses_the_object_on_its_slice(tmp_path: Path) -> None:
    """A lasso traced around the hippocampus on one slice gives that slice's outline (Dice >= 0.8 there; the old
    bounding-box reading gave 0.78 on average over 12 cases) and nothing outside the outline on that slice; the
    learned engine carries it to neighbouring slices. A negative lasso removes what it encloses."""

    root = tmp_path / "served"
    root.mkdir()
    shutil.copyfile(DATA / "imagesTr" / "hippocampus_001.nii.gz", root / "case.nii.gz")
    with TestClient(create_app([root])) as client:
        _lasso_checks(client, root, tmp_path)


def _lasso_checks(client: TestClient, root: Path, tmp_path: Path) -> None:
    from skimage.measure import find_contours

    sid = _open(client, "case.nii.gz")["id"]
    ref = medimg.read_labels(DATA / "labelsTr" / "hippocampus_001.nii.gz").array > 0
    z = int(np.argmax(ref.sum((0, 1))))
    sl = ref[:, :, z]
    contour = max(find_contours(np.pad(sl, 1).astype(float), 0.5), key=len) - 1
    pts = [[round(a), round(b), z] for a, b in contour]
    obj = client.post(f"/api/images/{sid}/objects", json={"name": "lassoed"}).json()["object"]
    r = client.post(f"/api/images/{sid}/objects/{obj}/prompts", json={"type": "lasso", "points": pts})
    assert r.status_code == 200, r.text
    mask = _labels(client, sid, tmp_path) == obj
    from medimg.interactive.prompts import lasso_region

    inside, axis = lasso_region(pts, ref.shape)
    assert axis == 2
    print(f"\nlasso: slice Dice {dice(mask[:, :, z], sl):.3f}, volume Dice {dice(mask, ref):.3f}")
    assert dice(mask[:, :, z], sl) >= 0.8
    assert not np.any(mask[:, :, z] & ~inside)
    assert mask[:, :, z - 1].any() or mask[:, :, z + 1].any()  # carried beyond the drawn slice
    # a negative lasso over the front half of the object on that slice clears it there
    xs = np.flatnonzero(mask[:, :, z].any(1))
    cut = int(xs[len(xs) // 2])
    box = [[0, 0, z], [cut, 0, z], [cut, ref.shape[1] - 1, z], [0, ref.shape[1] - 1, z]]
    r = client.post(
        f"/api/images/{sid}/objects/{obj}/prompts", json={"type": "lasso", "points": box, "positive": False}
    )
    assert r.status_code == 200, r.text
    after = _labels(client, sid, tmp_path) == obj
    assert not after[: cut - 1, :, z].any() and after[cut + 2 :, :, z].any()
    # a lasso that is not on one slice, and one of two points, are refused with a message
    r = client.post(
        f"/api/images/{sid}/objects/{obj}/prompts", json={"type": "lasso", "points": [[1, 1, 1], [5, 2, 3], [3, 6, 5]]}
    )
    assert r.status_code == 422 and "one slice" in r.json()["detail"]
    r = client.post(
        f"/api/images/{sid}/objects/{obj}/prompts", json={"type": "lasso", "points": [[1, 1, z], [5, 2, z]]}
    )
    assert r.status_code == 422 and "at least 3 points" in r.json()["detail"]


def test_models_lists_bundled_and_served_model_folders(tmp_path: Path) -> None:
    """GET /api/models: the bundled models and a user's model folder under the served folder, which segments."""
    from medimg.registry import find

    root = tmp_path / "served"
    (root / "models").mkdir(parents=True)
    shutil.copytree(find("hippocampus", "segmentation"), root / "models" / "my_hippo")
    shutil.copyfile(DATA / "imagesTr" / CASE, root / CASE)
    with TestClient(create_app([root])) as c:
        models = c.get("/api/models").json()
        assert {"model": "hippocampus", "name": "hippocampus", "source": "bundled"} in models
        assert {"model": "models/my_hippo", "name": "my_hippo", "source": "served folder"} in models
        sid = _open(c, CASE)["id"]
        r = c.post(f"/api/images/{sid}/segment", json={"model": "models/my_hippo"})
        assert r.status_code == 200, r.text
        assert set(r.json()["labels"]) == {"1", "2"}
        # for an open image, the models whose domain accepts it come first; the others say why not
        ranked = c.get("/api/models", params={"image": sid}).json()
        accepting = [m["model"] for m in ranked if m["in_domain"]]
        assert set(accepting) == {"hippocampus", "models/my_hippo"}
        assert [m["model"] for m in ranked[: len(accepting)]] == accepting
        fetal = next(m for m in ranked if m["model"] == "fetal-head")
        assert not fetal["in_domain"] and "2D" in fetal["why"]


def test_segment_progress(client: TestClient) -> None:
    """GET .../progress follows the segmentation: while it runs another request can read it; after it, the task is
    done with every network call counted (8 with mirroring TTA's passes would be 8; the hippocampus model: 1)."""
    sid = _open(client, "case.mha")["id"]
    assert client.get(f"/api/images/{sid}/progress").json()["task"] is None
    assert client.post(f"/api/images/{sid}/segment", json={"model": "hippocampus"}).status_code == 200
    p = client.get(f"/api/images/{sid}/progress").json()
    assert p["task"] == "segment" and p["stage"] == "done" and not p["running"] and p["error"] is None
    assert p["elapsed_s"] > 0
    bad = client.post(f"/api/images/{sid}/segment", json={"model": "no-such-model"})
    assert bad.status_code in (404, 422)


def test_predictor_progress_counts_network_calls() -> None:
    """The Predictor's progress hook advances once per network call of the sliding window (mirroring TTA: 8)."""
    from medimg.seg import Predictor, resolve_model

    pred = Predictor(resolve_model("hippocampus"))
    seen: list[tuple[str, int]] = []
    done: list[int] = []

    def progress(items, what):  # the operations layer's convention
        seen.append((what, len(items)))
        for i in items:
            done.append(i)
            yield i

    calls = [0]
    net = pred.net

    def counting(x):
        calls[0] += 1
        return net(x)

    pred.net = counting
    pred.progress = progress
    pred(medimg.read(DATA / "imagesTr" / CASE), tta=True)
    assert seen == [("segmenting", calls[0])] and calls[0] == 8 and len(done) == 8


def test_window_count_matches_monai() -> None:
    import torch
    from monai.inferers import sliding_window_inference

    from medimg.seg.predict import window_count

    for shape, patch, overlap in [
        ((40, 33, 20), (16, 16, 16), 0.5),
        ((10, 70), (32, 32), 0.25),
        ((8, 8, 8), (16, 16, 16), 0.5),
    ]:
        n = [0]

        def f(x, n=n):
            n[0] += x.shape[0]
            return x

        sliding_window_inference(torch.zeros(1, 1, *shape), patch, sw_batch_size=1, predictor=f, overlap=overlap)
        assert window_count(shape, patch, overlap) == n[0]


@needs_shared
def test_dicom_series_saved_as_dicom_seg(tmp_path: Path) -> None:
    """A DICOM series opened in the workbench is saved as a DICOM SEG that references it and keeps its geometry."""
    import pydicom

    src = SHARED / "dicom_seg_ct3slice" / "ct-3slice"
    shutil.copytree(src, tmp_path / "ct")
    with TestClient(create_app([tmp_path])) as c:
        wl = [e["path"] for e in c.get("/api/worklist").json()]
        assert wl == ["ct"], wl
        info = _open(c, "ct")
        img = medimg.read(tmp_path / "ct")
        assert info["shape"] == list(img.shape)
        lab = np.zeros(img.shape, np.uint8)
        lab[200:260, 220:300, 0:2] = 1
        lab[300:340, 100:150, 1:3] = 2
        up = tmp_path / "up.nii.gz"
        medimg.write(medimg.LabelMap(lab, img.spacing, img.origin, img.direction), up)
        assert c.put(f"/api/images/{info['id']}/labels", content=up.read_bytes()).status_code == 200
        r = c.post(f"/api/images/{info['id']}/save", json={"path": "ct_seg.dcm"})
        assert r.status_code == 200, r.text
    ds = pydicom.dcmread(tmp_path / "ct_seg.dcm")
    series = {pydicom.dcmread(f).SeriesInstanceUID for f in (tmp_path / "ct").iterdir()}
    assert ds.Modality == "SEG"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID in series
    back = medimg.read_labels(tmp_path / "ct_seg.dcm")
    np.testing.assert_array_equal(back.array, lab)
    np.testing.assert_allclose(back.spacing, img.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, img.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, img.direction, atol=1e-6)


def test_prompts_read_every_channel_of_a_colour_image(tmp_path: Path) -> None:
    """An RGB photograph: the viewer gets one grey image, the prompts segment from all three channels (a shape that
    differs from its background in hue only is found; the luminance alone does not show it)."""
    yy, xx = np.mgrid[:96, :96]
    shape = ((xx - 40) ** 2 + (yy - 40) ** 2 < 14**2) | ((xx - 58) ** 2 + (yy - 52) ** 2 < 11**2)
    rng = np.random.default_rng(0)
    rgb = np.where(shape[..., None], [90.0, 137.0, 90.0], [180.0, 90.0, 90.0]) + rng.normal(0, 4, (96, 96, 3))
    root = tmp_path / "served"
    root.mkdir()
    medimg.write(medimg.Image(np.clip(rgb, 0, 255).astype(np.uint8), ndim=2), root / "photo.png")
    gt = medimg.read(root / "photo.png").array[..., 1] > 113  # the shape, on the file's own grid
    with TestClient(create_app([root])) as client:
        info = _open(client, "photo.png")
        sid = info["id"]
        obj = client.post(f"/api/images/{sid}/objects", json={"name": "shape"}).json()["object"]
        c = [int(v) for v in np.argwhere(gt).mean(0).round()]
        assert gt[tuple(c)]
        r = client.post(f"/api/images/{sid}/objects/{obj}/prompts", json={"type": "click", "points": [c]})
        assert r.status_code == 200, r.text
        for _ in range(3):
            mask = _labels(client, sid, tmp_path) == obj
            nc = next_click(mask, gt)
            if nc is None:
                break
            body = {"type": "click", "points": [list(nc.point)], "positive": nc.positive}
            assert client.post(f"/api/images/{sid}/objects/{obj}/prompts", json=body).status_code == 200
        mask = _labels(client, sid, tmp_path) == obj
        print(f"\ncolour shape in the workbench: Dice {dice(mask, gt):.3f}")
        assert mask.shape == gt.shape and dice(mask, gt) >= 0.85
