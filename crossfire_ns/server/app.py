"""The HTTP service: FastAPI on a ``MapLocalizer`` (FastAPI for its typed multipart forms, validation and
OpenAPI page at ``/docs``; uvicorn serves it).

* ``GET /health``: ``{"status": "ok"}``.
* ``GET /map``: method, checkpoint, training cameras, the pose conventions of the answers.
* ``POST /localize``: multipart ``image`` (PNG/JPEG); optional form fields ``fx``, ``fy``, ``cx``, ``cy`` (all four, in
  pixels; absent: the training camera's, with a warning), ``prior`` (JSON 4x4 camera-to-world in the data's original
  frame), ``sequence`` (an id: the previous estimate of that sequence is the prior). The answer: ``status``,
  ``transform_matrix`` (camera-to-world, OpenGL, original frame, as in poses.json), ``colmap`` (``qvec``, ``tvec``:
  world-to-camera), inliers, seconds, message, warnings.

Bad requests get a 4xx naming the problem (400; 413 for an upload over ``max_upload_bytes``); an internal failure is a
500 for that request only. Requests run one at a time on the model; at most ``queue_size`` wait, more get a 503.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any, Dict, Optional

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from typing_extensions import Annotated

from crossfire_ns.geometry import pose_matrix
from crossfire_ns.io.atomic import to_jsonable
from crossfire_ns.io.queries import QueryImageError, decode_image
from crossfire_ns.localize.api import MapLocalizer
from crossfire_ns.localize.matchers import matcher_name

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Largest accepted image upload (20 MiB: a full-size phone JPEG fits)."""
QUEUE_SIZE = 8
"""Requests that may wait while one is localized; more are answered 503."""

FRAME_CONVENTION = {
    "frame": "the training data's original frame (that of its transforms.json)",
    "transform_matrix": "camera-to-world, OpenGL camera axes (x right, y up, looking along -z), as in poses.json",
    "colmap": "world-to-camera, COLMAP's convention: qvec (w, x, y, z), tvec; OpenCV axes (x right, y down, z ahead)",
    "intrinsics": "pixels, pixel centres at +0.5 (cx = width / 2 for a centred principal point)",
}


class BadRequest(Exception):
    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def _intrinsics(fx, fy, cx, cy) -> Optional[np.ndarray]:
    given = {"fx": fx, "fy": fy, "cx": cx, "cy": cy}
    present = [k for k, v in given.items() if v is not None]
    if not present:
        return None
    if len(present) < 4:
        missing = ", ".join(k for k in given if given[k] is None)
        raise BadRequest(f"intrinsics incomplete: give all of fx, fy, cx, cy (pixels) or none; missing {missing}")
    values = {}
    for key, text in given.items():
        try:
            values[key] = float(text)
        except ValueError:
            raise BadRequest(f"intrinsics: {key}={text!r} is not a number") from None
        if not np.isfinite(values[key]):
            raise BadRequest(f"intrinsics: {key}={text!r} is not finite")
    if values["fx"] <= 0 or values["fy"] <= 0:
        raise BadRequest(f"intrinsics: focal lengths must be positive, got fx={values['fx']}, fy={values['fy']}")
    return np.array([[values["fx"], 0, values["cx"]], [0, values["fy"], values["cy"]], [0, 0, 1.0]])


def _prior(text: Optional[str]) -> Optional[np.ndarray]:
    if text is None or not text.strip():
        return None
    try:
        return pose_matrix(json.loads(text), "prior")
    except (ValueError, TypeError) as err:
        raise BadRequest(f"prior must be a JSON 4x4 (or 3x4) camera-to-world matrix: {err}") from None


def create_app(
    map_localizer: MapLocalizer, max_upload_bytes: int = MAX_UPLOAD_BYTES, queue_size: int = QUEUE_SIZE
) -> FastAPI:
    """The service on a loaded map."""
    app = FastAPI(title="crossfire localization", description=__doc__)
    state = {"pending": 0}
    lock = threading.Lock()
    crossfire_map = map_localizer.map

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, err: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status_code)

    @app.get("/health")
    def health() -> Dict[str, Any]:
        return {"status": "ok", "pending": state["pending"]}

    @app.get("/map")
    def map_info() -> Dict[str, Any]:
        cams = crossfire_map.train_cameras
        return to_jsonable(
            {
                "config": crossfire_map.config_path,
                "checkpoint": crossfire_map.checkpoint,
                "step": crossfire_map.step,
                "method": crossfire_map.method,
                "matcher": matcher_name(map_localizer.matcher),
                "training_cameras": {
                    "count": len(cams),
                    "width": int(cams.width[0]),
                    "height": int(cams.height[0]),
                    "fx": float(cams.fx[0]),
                    "fy": float(cams.fy[0]),
                    "cx": float(cams.cx[0]),
                    "cy": float(cams.cy[0]),
                    "transform_matrices": crossfire_map.to_original(crossfire_map.train_c2w),
                },
                "conventions": FRAME_CONVENTION,
                "max_upload_bytes": max_upload_bytes,
                "queue_size": queue_size,
            }
        )

    @app.post("/localize")
    async def localize(
        request: Request,
        image: Annotated[Optional[UploadFile], File()] = None,
        fx: Annotated[Optional[str], Form()] = None,
        fy: Annotated[Optional[str], Form()] = None,
        cx: Annotated[Optional[str], Form()] = None,
        cy: Annotated[Optional[str], Form()] = None,
        prior: Annotated[Optional[str], Form()] = None,
        sequence: Annotated[Optional[str], Form()] = None,
    ) -> JSONResponse:
        if image is None:
            raise BadRequest("no 'image' file in the multipart form (send the image as the 'image' field)")
        data = await image.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise BadRequest(f"'image' is larger than the {max_upload_bytes} bytes this server accepts", 413)
        if not data:
            raise BadRequest("'image' is empty")
        name = image.filename or "image"
        try:
            rgb = decode_image(io.BytesIO(data), f"'image' ({name})")
        except QueryImageError as err:
            raise BadRequest(str(err)) from None
        K = _intrinsics(fx, fy, cx, cy)
        prior_c2w = _prior(prior)
        with lock:
            if state["pending"] > queue_size:
                return JSONResponse(
                    {"detail": f"busy: {state['pending']} requests are waiting (queue of {queue_size}); retry later"},
                    status_code=503,
                )
            state["pending"] += 1
        try:
            answer = await run_in_threadpool(map_localizer.localize, rgb, K, prior_c2w, sequence or None)
        except Exception as err:  # noqa: BLE001  this request fails, the server goes on
            return JSONResponse({"detail": f"internal error: {type(err).__name__}: {err}"}, status_code=500)
        finally:
            with lock:
                state["pending"] -= 1
        if answer.crashed:
            return JSONResponse({"detail": f"internal error: {answer.message}", **answer.to_dict()}, status_code=500)
        if answer.status == "unreadable":
            return JSONResponse({"detail": answer.message, **answer.to_dict()}, status_code=400)
        return JSONResponse(to_jsonable({"file": name, **answer.to_dict()}))

    return app
