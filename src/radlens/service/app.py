"""The FastAPI app: upload → prediction + operating point + evidence; a health check; the page.

Safety rules: uploads are held in memory and decoded by content (never by the client's file name,
which is only echoed back as a label); the body size is capped before parsing (413); a declared
content type outside the radiograph types, or bytes that do not decode, get a 400 with the reason.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from radlens.io import DecodeError
from radlens.service.engine import MAX_K, Engine
from radlens.service.limits import BodySizeLimit
from radlens.service.schemas import Health, PredictResponse, Problem

DEFAULT_MAX_UPLOAD = 32 * 2**20
# What browsers and clients declare for radiographs; DICOM often arrives as octet-stream or with no type.
ALLOWED_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/tiff", "application/dicom", "application/octet-stream", ""}
ERRORS = {400: {"model": Problem, "description": "Not a radiograph radlens can decode, or a bad option."},
          413: {"model": Problem, "description": "Upload larger than the service's limit."}}


def _filters(sex: Optional[str], view: Optional[str], age_min: Optional[float], age_max: Optional[float],
             label: Optional[str]) -> dict:
    f: dict = {}
    if sex:
        f["sex"] = sex
    if view:
        f["view"] = [v for v in view.split(",") if v] if "," in view else view
    if age_min is not None or age_max is not None:
        f["age"] = (age_min, age_max)
    if label:
        f["label"] = label
    return f


def create_app(engine: Engine, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> FastAPI:
    app = FastAPI(title="radlens", version="0.1.0",
                  description="Radiograph prediction with similar past cases as evidence. Runs offline.")
    page = resources.files("radlens.service").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> str:
        return page

    @app.get("/api/health", response_model=Health)
    def health() -> dict:
        return {"status": "ok", **engine.describe()}

    @app.post("/api/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict(
        file: UploadFile = File(..., description="PNG, JPEG, TIFF or DICOM radiograph."),
        k: int = Query(engine.default_k, ge=1, le=MAX_K, description="Evidence cases to return."),
        sex: Optional[str] = Query(None, description="Evidence filter: F or M."),
        view: Optional[str] = Query(None, description="Evidence filter: AP, PA (comma-separated for either)."),
        age_min: Optional[float] = Query(None, ge=0, le=150), age_max: Optional[float] = Query(None, ge=0, le=150),
        label: Optional[str] = Query(None, description="Evidence filter: cases carrying this finding."),
        operating_point: Optional[str] = Query(None, description="youden, sensitivity or specificity."),
    ) -> dict:
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        if ctype not in ALLOWED_TYPES:
            raise HTTPException(400, f"unsupported content type {ctype!r}: send PNG, JPEG, TIFF or DICOM")
        data = await file.read()
        try:
            return await run_in_threadpool(engine.analyse, data, name=file.filename or "upload", k=k,
                                           filters=_filters(sex, view, age_min, age_max, label),
                                           operating_point=operating_point)
        except DecodeError as e:
            raise HTTPException(400, f"could not read the upload: {e.reason}") from None
        except KeyError as e:
            raise HTTPException(400, str(e.args[0]) if e.args else "bad option") from None

    @app.get("/api/cases/{case_id}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": Problem}})
    async def case_thumbnail(case_id: int) -> Response:
        jpeg = await run_in_threadpool(engine.case_thumbnail, case_id)
        if jpeg is None:
            raise HTTPException(404, f"no image for case {case_id}")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    app.add_middleware(BodySizeLimit, max_bytes=max_upload_bytes)
    return app


def serve(adapter_dir: Path, index_dir: Path, *, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, weights: Path | None = None, k: int = 10,
          log_level: str = "info") -> None:
    import uvicorn

    engine = Engine.load(adapter_dir, index_dir, weights=weights, default_k=k)
    uvicorn.run(create_app(engine, max_upload_bytes=max_upload_bytes), host=host, port=port, log_level=log_level)
