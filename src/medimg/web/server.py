"""The workbench's HTTP API (FastAPI): ``create_app(roots, token)``. See docs/web.md for the endpoints.

The server only calls medimg's public API (``medimg.read``/``write``, ``medimg.ops``, ``medimg.interactive``);
paths are confined to the served roots (403 outside, 404 missing), a :class:`~medimg.errors.MedimgError` is a 422
with its message, a configured token is required as ``Authorization: Bearer T`` on every ``/api`` call (401),
request bodies are limited (413), and no CORS headers are sent.
"""

from __future__ import annotations

import hmac
import json
import math
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

import medimg
from medimg.errors import MedimgError
from medimg.ops import PathNotAllowedError
from medimg.web.state import STATUSES, NotFoundError, Store

STATIC_DIR = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # PUT .../labels
MAX_JSON_BYTES = 4 * 1024 * 1024  # every other request
NIFTI = "application/octet-stream"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: bearer token on ``/api`` (401), request body size limits (413), and refusal of requests
    from another origin (a browser page elsewhere cannot drive the API: 403)."""

    def __init__(self, app: ASGIApp, token: str | None, max_upload: int, max_json: int) -> None:
        self.app, self.token, self.max_upload, self.max_json = app, token, max_upload, max_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        if origin and origin.split("://", 1)[-1].rstrip("/") != headers.get("host", ""):
            await _plain(send, 403, "Requests from another origin are refused (no CORS).")
            return
        if self.token and (path.startswith("/api") or path in ("/openapi.json", "/docs", "/redoc")):
            auth = headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                await _plain(send, 401, "Missing or wrong token: send Authorization: Bearer <token>.")
                return
        limit = self.max_upload if scope["method"] == "PUT" and path.endswith("/labels") else self.max_json
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            await _plain(send, 413, f"Request body over the limit of {limit} bytes.")
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return msg

        async def tracked(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _plain(send, 413, f"Request body over the limit of {limit} bytes.")


async def _plain(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class OpenRequest(BaseModel):
    path: str = Field(description="Image file or DICOM folder, relative to a served root (or absolute inside one).")
    labels: str | None = Field(None, description="Optional label file to start from (replaces the working labels).")


class SegmentRequest(BaseModel):
    model: str = Field("hippocampus", description="Bundled segmentation model name, or a model folder under a root.")
    force: bool = False


class ObjectRequest(BaseModel):
    name: str = ""


class PromptRequest(BaseModel):
    type: str = Field(description="click, box, scribble or lasso.")
    points: list[list[float]]
    positive: bool = True


class SaveRequest(BaseModel):
    path: str


class ReviewRequest(BaseModel):
    prediction: str = Field(description="Predicted label map under a served root.")
    reference: str = Field(description="Reference label map on the same grid.")
    image: str | None = Field(None, description="Image to show under the difference (default: found beside).")
    label: int | None = Field(None, description="Compare this label only (default: every label).")


class EvaluateRequest(BaseModel):
    predictions: str = Field(description="Folder of predicted label maps under a served root.")
    references: str = Field(description="Folder of reference label maps (same case names).")
    output_dir: str = Field(description="Folder for per_case.csv, summary.json and report.html (created).")


FILE_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _finite(v: Any) -> Any:
    """JSON-safe: NaN and infinities (e.g. HD95 of an absent label) become null."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


class StatusRequest(BaseModel):
    path: str
    status: str = Field(description=" | ".join(STATUSES))


def create_app(
    roots: list[Path],
    token: str | None = None,
    *,
    files: Sequence[Path] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_json_bytes: int = MAX_JSON_BYTES,
) -> FastAPI:
    """The workbench app serving ``roots`` (folders); ``files`` limits the worklist to those files; ``token``
    (when given) is required as ``Authorization: Bearer <token>`` on every API call."""
    store = Store(roots, files)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(title="medimg workbench", version=medimg.__version__, lifespan=lifespan)
    app.state.store = store

    @app.exception_handler(PathNotAllowedError)
    async def _forbidden(request: Request, exc: PathNotAllowedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(NotFoundError)
    async def _missing(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(MedimgError)
    async def _unprocessable(request: Request, exc: MedimgError) -> JSONResponse:
        return JSONResponse({"detail": f"{type(exc).__name__}: {exc}"}, status_code=422)

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": medimg.__version__}

    @app.get("/api/worklist")
    def worklist() -> list[dict[str, Any]]:
        return store.worklist()

    @app.post("/api/worklist/status")
    def set_status(req: StatusRequest) -> dict[str, Any]:
        p = store.resolve(req.path)
        return {"path": store.rel(p), **store.set_status(store.root_of(p), store.rel(p), req.status)}

    @app.post("/api/images")
    def open_image(req: OpenRequest) -> dict[str, Any]:
        return store.open(req.path, req.labels).summary()

    @app.get("/api/images/{sid}")
    def image_info(sid: str) -> dict[str, Any]:
        s = store.get(sid)
        with s.lock:
            return s.summary()

    @app.get("/api/images/{sid}/volume")
    def volume(sid: str, gz: bool = True, downsample: int = 1) -> Response:
        s = store.get(sid)
        if downsample < 1:
            raise MedimgError(f"downsample must be an integer >= 1, got {downsample}.")
        tag = f".ds{downsample}" if downsample > 1 else ""
        name = f"{s.id}{tag}.nii.gz" if gz else f"{s.id}{tag}.nii"
        return Response(
            s.volume_bytes(gz, downsample),
            media_type=NIFTI,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.post("/api/images/{sid}/segment")
    def segment(sid: str, req: SegmentRequest) -> dict[str, Any]:
        from medimg import ops
        from medimg.registry import bundled

        s = store.get(sid)
        t0 = time.perf_counter()
        model = req.model
        if model not in {m.name for m in bundled("segmentation")}:
            model = str(store.resolve(model))  # a model folder: only under the served roots
        s.sidecar_dir.mkdir(exist_ok=True)
        s.task.start("segment", "loading the model and the image")
        try:
            with tempfile.TemporaryDirectory(dir=s.sidecar_dir, prefix="segment-") as d:
                out = Path(d) / "labels.nii.gz"
                res: Any = ops.run(
                    "segment",
                    {"image": str(s.path), "output": str(out), "model": model, "force": req.force},
                    ops.Context(roots=store.roots, progress=s.task.iterate),
                )
                s.task.stage("loading the result")
                lab = medimg.read_labels(out)
        except Exception as e:
            s.task.finish(error=str(e))
            raise
        names = {st.label: st.name for st in res.structures}
        with s.lock:
            s.replace(lab.array, names)
            s.task.finish()
            return {
                "labels": {str(k): v for k, v in s.all_names().items()},
                "volumes_ml": {str(k): v for k, v in s.volumes_ml().items()},
                "ms": round(1000 * (time.perf_counter() - t0), 1),
            }

    @app.get("/api/models")
    def models(image: str | None = None) -> list[dict[str, Any]]:
        """Segmentation models: the bundled ones (by name) and model folders under the served folders (by path).
        With ``image`` (an open image's id) each says whether that image is inside its training domain
        (``in_domain``, ``why``), and the models that accept it come first."""
        from medimg.domain import load_image_domain
        from medimg.registry import bundled

        entries: list[tuple[dict[str, Any], Path]] = [
            ({"model": m.name, "name": m.name, "source": "bundled"}, m.path) for m in bundled("segmentation")
        ]
        for folder in store.model_folders():
            entries.append(({"model": store.rel(folder), "name": folder.name, "source": "served folder"}, folder))
        if image is None:
            return [e for e, _ in entries]
        img = store.get(image).image
        for entry, folder in entries:
            dom = load_image_domain(folder)
            diffs = dom.differences([img]) if dom is not None else []
            entry.update(in_domain=not diffs, why=diffs[0] if diffs else "")
        return [e for e, _ in sorted(entries, key=lambda ef: not ef[0]["in_domain"])]

    @app.get("/api/images/{sid}/progress")
    def progress(sid: str) -> dict[str, Any]:
        """Progress of the image's running (or last) long task: ``{"task", "stage", "done", "total", "running",
        "elapsed_s", "error"}`` (``total`` 0: a stage without a count)."""
        return store.get(sid).task.snapshot()

    @app.post("/api/images/{sid}/objects")
    def new_object(sid: str, req: ObjectRequest) -> dict[str, Any]:
        return {"object": store.get(sid).new_object(req.name)}

    @app.post("/api/images/{sid}/objects/{obj}/prompts")
    def prompt(sid: str, obj: int, req: PromptRequest) -> dict[str, Any]:
        return store.get(sid).prompt(obj, req.type, req.points, req.positive)

    @app.post("/api/images/{sid}/undo")
    def undo(sid: str) -> dict[str, Any]:
        return store.get(sid).undo()

    @app.post("/api/images/{sid}/redo")
    def redo(sid: str) -> dict[str, Any]:
        return store.get(sid).redo()

    @app.get("/api/images/{sid}/labels")
    def get_labels(sid: str, gz: bool = True) -> Response:
        return Response(store.get(sid).labels_bytes(gz), media_type=NIFTI)

    @app.get("/api/images/{sid}/labels/region")
    def get_region(sid: str, bbox: str) -> Response:
        try:
            v = [int(t) for t in bbox.split(",")]
        except ValueError:
            raise MedimgError("bbox must be x0,y0,z0,x1,y1,z1 (inclusive voxel corners).") from None
        if len(v) != 6:
            raise MedimgError("bbox must be x0,y0,z0,x1,y1,z1 (inclusive voxel corners).")
        data, shape, dtype = store.get(sid).region(v[:3], v[3:])
        return Response(data, media_type=NIFTI, headers={"X-Shape": ",".join(map(str, shape)), "X-Dtype": dtype})

    @app.put("/api/images/{sid}/labels")
    async def put_labels(sid: str, request: Request) -> dict[str, Any]:
        s = store.get(sid)
        body = await request.body()
        return await run_in_threadpool(_put_labels, s, body)

    @app.get("/api/images/{sid}/volumes")
    def volumes(sid: str) -> dict[str, Any]:
        s = store.get(sid)
        with s.lock:
            return {
                "volumes_ml": {str(k): v for k, v in s.volumes_ml().items()},
                "names": {str(k): v for k, v in s.all_names().items()},
            }

    @app.post("/api/images/{sid}/save")
    def save(sid: str, req: SaveRequest) -> dict[str, Any]:
        s = store.get(sid)
        p = Path(req.path)
        target = (store.roots[0] / p) if not p.is_absolute() else p
        from medimg.ops import confine

        out = confine(target, store.roots)
        if out == s.path or s.path in out.parents:
            raise PathNotAllowedError(f"{req.path!r} is the image itself (or inside it); choose another path.")
        if not out.parent.is_dir():
            raise NotFoundError(f"The folder of {req.path!r} does not exist under the served folders.")
        with s.lock:
            lab = s.label_map()
        ref = s.path if out.name.lower().endswith(".dcm") else None
        medimg.write(lab, out, reference=ref)
        return {"path": req.path}

    def shown(p: Path) -> str:
        """A path as the API takes it back: relative to its root when that resolves to it, else absolute."""
        rel = store.rel(p)
        try:
            return rel if store.resolve(rel) == p else str(p)
        except MedimgError:
            return str(p)

    def output_path(path: str) -> Path:
        from medimg.ops import confine

        q = Path(path)
        return confine((store.roots[0] / q) if not q.is_absolute() else q, store.roots)

    @app.post("/api/review")
    def review(req: ReviewRequest) -> dict[str, Any]:
        from medimg import ops

        pred, ref = store.resolve(req.prediction), store.resolve(req.reference)
        image = store.resolve(req.image) if req.image else None
        t0 = time.perf_counter()
        s = store.review(pred, ref, image, req.label)  # same grid, or a GeometryError saying so (422)
        res: Any = ops.run(
            "overlap",
            {"prediction": str(pred), "reference": str(ref), "labels": [req.label] if req.label else None},
            ops.Context(roots=store.roots),
        )
        counts = np.bincount(s.labels.ravel(), minlength=4)
        v = s.image.voxel_volume_mm3 / 1000.0
        base = f"/api/images/{s.id}"
        return {
            "id": s.id,
            "prediction": shown(pred),
            "reference": shown(ref),
            "image": shown(s.shown_image) if s.shown_image else None,
            "metrics": _finite([m.model_dump() for m in res.labels]),
            "difference": {
                "names": {str(k): n for k, n in s.names.items()},
                "voxels": {str(k): int(counts[k]) for k in (1, 2, 3)},
                "volumes_ml": {str(k): float(counts[k] * v) for k in (1, 2, 3)},
            },
            "urls": {"info": base, "volume": f"{base}/volume", "labels": f"{base}/labels"},
            "ms": round(1000 * (time.perf_counter() - t0), 1),
        }

    @app.post("/api/evaluate")
    def evaluate(req: EvaluateRequest) -> dict[str, Any]:
        from medimg import ops

        preds, refs = store.resolve(req.predictions), store.resolve(req.references)
        for d, what in ((preds, "predictions"), (refs, "references")):
            if not d.is_dir():
                raise MedimgError(f"{what} must be a folder of label maps; {shown(d)!r} is a file.")
        out = output_path(req.output_dir)
        if out in (preds, refs) or preds in out.parents or refs in out.parents:
            raise PathNotAllowedError(f"{req.output_dir!r} is (inside) an input folder; choose another output_dir.")
        if not out.parent.is_dir():
            raise NotFoundError(f"The folder of {req.output_dir!r} does not exist under the served folders.")
        t0 = time.perf_counter()
        res: Any = ops.run(
            "evaluate",
            {"predictions": str(preds), "references": str(refs), "output_dir": str(out)},
            ops.Context(roots=store.roots),
        )
        report = out / "report.html"
        rep = shown(report) if report.exists() else None
        return {
            "n_cases": res.n_cases,
            "classes": _finite(res.classes),
            "output_dir": shown(out),
            "files": [shown(Path(f)) for f in res.files],
            "report": rep,
            "report_url": f"/api/files?{urlencode({'path': rep})}" if rep else None,
            "ms": round(1000 * (time.perf_counter() - t0), 1),
        }

    @app.get("/api/files")
    def get_file(path: str) -> Response:
        p = store.resolve(path)
        if not p.is_file():
            raise NotFoundError(f"{path!r} is not a file under the served folders.")
        media = FILE_TYPES.get(p.suffix.lower(), "application/octet-stream")
        # read-only, and a served page runs no script and gets no access to the app's origin
        headers = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
        headers["Cache-Control"] = "no-cache"
        return FileResponse(p, media_type=media, headers=headers)

    if (STATIC_DIR / "index.html").exists():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")

    app.add_middleware(Guard, token=token, max_upload=max_upload_bytes, max_json=max_json_bytes)
    return app


def _put_labels(s: Any, body: bytes) -> dict[str, Any]:
    if not body:
        raise MedimgError("Send the label map as NIfTI bytes in the request body.")
    suffix = ".nii.gz" if body[:2] == b"\x1f\x8b" else ".nii"
    with tempfile.TemporaryDirectory(prefix="medimg-upload-") as d:
        p = Path(d) / f"labels{suffix}"
        p.write_bytes(body)
        img = medimg.read(p)
    arr = img.array
    if img.ndim == 3 and s.labels.ndim == 2 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    s.replace(arr)
    with s.lock:
        return {"volumes_ml": {str(k): v for k, v in s.volumes_ml().items()}}
