"""The HTTP service: FastAPI on a ``MapLocalizer`` (FastAPI for its typed multipart forms, validation and
OpenAPI page at ``/docs``; uvicorn serves it).

* ``GET /health``: ``{"status": "ok", "map_ready": true, "pending": n}``; 503 with ``"status": "unavailable"`` once
  the last ``CRASHES_UNAVAILABLE`` localizations all failed inside the localizer (until one succeeds).
* ``GET /map``: method, run and checkpoint names (no paths), training cameras, the pose conventions of the answers.
* ``POST /localize``: multipart ``image`` (PNG or JPEG); optional form fields ``fx``, ``fy``, ``cx``, ``cy`` (all four,
  in pixels; absent: the training camera's, with a warning), ``prior`` (JSON 4x4 camera-to-world in the data's
  original frame), ``sequence`` (an id: the previous estimate of that sequence is the prior). The answer: ``status``,
  ``transform_matrix`` (camera-to-world, OpenGL, original frame, as in poses.json), ``colmap`` (``qvec``, ``tvec``:
  world-to-camera), inliers, seconds, message, warnings.

Limits come before work (``crossfire_ns.server.guard``: host, token, declared size, then the body counted as read).
Bad requests get a 4xx naming the problem: 400 (an image that is not PNG/JPEG, intrinsics that do not fit the image,
a prior that is not a rigid 4x4), 401 (token), 408 (a stalled body), 413 (an upload over ``max_upload_bytes`` or an
image whose header declares more than ``max_pixels``); an internal failure is a 500 for that request only. Decoding
and localization run in a worker thread, one request at a time; at most ``queue_size`` wait, more get a 503 with
``Retry-After``.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, Dict, Optional, Sequence

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from typing_extensions import Annotated

from crossfire_ns.geometry import pose_matrix
from crossfire_ns.io.atomic import to_jsonable
from crossfire_ns.io.pose_formats import check_rigid
from crossfire_ns.io.queries import (
    IMAGE_FORMATS,
    ImageTooLargeError,
    QueryImageError,
    check_intrinsics,
    decode_image,
    pixel_cap,
)
from crossfire_ns.localize.api import Localization, MapLocalizer
from crossfire_ns.localize.matchers import matcher_name
from crossfire_ns.server.guard import RequestGuard

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Largest accepted image upload (20 MiB: a full-size phone JPEG fits)."""
FORM_BYTES = 64 * 1024
"""Room in a request's body beyond the image: the other form fields and the multipart framing."""
QUEUE_SIZE = 8
"""Requests that may wait while one is localized; more are answered 503."""
BODY_TIMEOUT = 30.0
"""Seconds a request's body may pause between two chunks before the request is dropped (408)."""
MAX_PRIOR_CHARS = 4096
"""Longest ``prior`` field: a 4x4 matrix in full precision takes under a kilobyte."""
MAX_JSON_DEPTH = 2
"""Nesting of a ``prior``: a list of rows."""
MAX_SEQUENCE_CHARS = 128
"""Longest ``sequence`` id."""
MAX_SEQUENCES = 1024
"""Sequences remembered at once; the one unused longest is forgotten first."""
CRASHES_UNAVAILABLE = 3
"""After this many localizations in a row that fail inside the localizer, ``/health`` says the map cannot answer."""

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


def form_intrinsics(fx, fy, cx, cy) -> Optional[np.ndarray]:
    """K from the four form fields (all or none); finite, focal lengths positive (the image size checks the rest)."""
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
            raise BadRequest(f"intrinsics: {key}={text[:40]!r} is not a number") from None
        if not np.isfinite(values[key]):
            raise BadRequest(f"intrinsics: {key}={text[:40]!r} is not finite")
    if values["fx"] <= 0 or values["fy"] <= 0:
        raise BadRequest(f"intrinsics: focal lengths must be positive, got fx={values['fx']}, fy={values['fy']}")
    return np.array([[values["fx"], 0, values["cx"]], [0, values["fy"], values["cy"]], [0, 0, 1.0]])


def json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects in a JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def form_prior(text: Optional[str]) -> Optional[np.ndarray]:
    """A rigid 4x4 camera-to-world from the ``prior`` field; its size and nesting checked before it is parsed."""
    if text is None or not text.strip():
        return None
    hint = "prior must be a JSON 4x4 (or 3x4) rigid camera-to-world matrix"
    if len(text) > MAX_PRIOR_CHARS:
        raise BadRequest(f"{hint}: got {len(text)} characters, more than the {MAX_PRIOR_CHARS} accepted")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"{hint}: got JSON nested {json_depth(text)} deep (a matrix is a list of rows: 2)")
    try:
        return check_rigid(pose_matrix(json.loads(text), "prior"), "prior")
    except (ValueError, TypeError, RecursionError) as err:
        raise BadRequest(f"{hint}: {err}") from None


def form_sequence(text: Optional[str]) -> Optional[str]:
    if text is None or not text:
        return None
    if len(text) > MAX_SEQUENCE_CHARS or not text.isprintable():
        raise BadRequest(f"sequence must be a printable id of at most {MAX_SEQUENCE_CHARS} characters")
    return text


def _name(path: Optional[Any]) -> Optional[str]:
    """The last part of a path: /map names files without saying where they are on the server."""
    return None if path is None else Path(path).name


def create_app(
    map_localizer: MapLocalizer,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    queue_size: int = QUEUE_SIZE,
    token: Optional[str] = None,
    allowed_hosts: Optional[Sequence[str]] = None,
    max_pixels: Optional[int] = None,
    body_timeout: float = BODY_TIMEOUT,
) -> FastAPI:
    """The service on a loaded map: with ``token`` every path but /health needs it; ``allowed_hosts`` (None: any)
    the Host names answered; ``max_pixels`` (None: ``pixel_cap`` of the localizer's ``max_image_side``) the most
    pixels an image's header may declare."""
    app = FastAPI(title="crossfire localization", description=__doc__)
    app.add_middleware(
        RequestGuard,
        max_body_bytes=max_upload_bytes + FORM_BYTES,
        token=token,
        allowed_hosts=allowed_hosts,
        body_timeout=body_timeout,
    )
    if max_pixels is None:
        max_pixels = pixel_cap(getattr(map_localizer, "max_image_side", None))
    state: Dict[str, Any] = {"pending": 0, "crashes": 0, "last_crash": "", "seconds": 1.0}
    sequences: "OrderedDict[str, None]" = OrderedDict()
    lock = threading.Lock()
    work = threading.Lock()  # one image decoded and localized at a time: memory stays that of one request
    crossfire_map = map_localizer.map

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, err: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status_code)

    @app.get("/health")
    async def health() -> JSONResponse:
        ready = state["crashes"] < CRASHES_UNAVAILABLE
        body = {"status": "ok" if ready else "unavailable", "map_ready": ready, "pending": state["pending"]}
        if not ready:
            body["detail"] = (
                f"the last {state['crashes']} localizations failed inside the localizer: {state['last_crash']}"
            )
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/map")
    async def map_info() -> Dict[str, Any]:
        cams = crossfire_map.train_cameras
        return to_jsonable(
            {
                "run": _name(None if crossfire_map.config_path is None else Path(crossfire_map.config_path).parent),
                "checkpoint": _name(crossfire_map.checkpoint),
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
                "max_pixels": max_pixels,
                "image_formats": list(IMAGE_FORMATS),
                "queue_size": queue_size,
            }
        )

    def remember(sequence: Optional[str]) -> None:
        """Keep at most ``MAX_SEQUENCES`` sequences: the one unused longest is forgotten."""
        if sequence is None:
            return
        with lock:
            sequences[sequence] = None
            sequences.move_to_end(sequence)
            forgotten = [sequences.popitem(last=False)[0] for _ in range(len(sequences) - MAX_SEQUENCES)]
        for old in forgotten:
            map_localizer.end_sequence(old)

    def decode_and_localize(
        data: IO[bytes], name: str, K: Optional[np.ndarray], prior_c2w: Optional[np.ndarray], sequence: Optional[str]
    ) -> Localization:
        """The request's work, in a worker thread: decode (header checked first), check K against the image, localize."""
        with work:
            try:
                rgb = decode_image(data, f"'image' ({name})", max_pixels=max_pixels)
                if K is not None:
                    check_intrinsics(K, rgb.shape[1], rgb.shape[0], "intrinsics")
            except ImageTooLargeError as err:
                raise BadRequest(str(err), 413) from None
            except QueryImageError as err:
                raise BadRequest(str(err)) from None
            remember(sequence)
            return map_localizer.localize(rgb, K, prior_c2w, sequence)

    def busy() -> JSONResponse:
        retry = max(1, math.ceil(state["seconds"] * state["pending"]))
        return JSONResponse(
            {
                "detail": f"busy: {state['pending']} requests ahead (one localizing, a queue of {queue_size}); retry "
                f"in {retry} s"
            },
            status_code=503,
            headers={"Retry-After": str(retry)},
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
        if image is None or isinstance(image, str):
            raise BadRequest("no 'image' file in the multipart form (send the image as the 'image' field)")
        size = image.size if image.size is not None else len(image.file.read())
        if size > max_upload_bytes:
            raise BadRequest(f"'image' is larger than the {max_upload_bytes} bytes this server accepts", 413)
        if not size:
            raise BadRequest("'image' is empty")
        image.file.seek(0)
        K = form_intrinsics(fx, fy, cx, cy)
        prior_c2w = form_prior(prior)
        sequence_id = form_sequence(sequence)
        name = (image.filename or "image")[:200]
        with lock:
            if state["pending"] > queue_size:
                return busy()
            state["pending"] += 1
        try:
            answer = await run_in_threadpool(decode_and_localize, image.file, name, K, prior_c2w, sequence_id)
        except BadRequest:
            raise
        except Exception as err:  # noqa: BLE001  this request fails, the server goes on
            return _crashed(state, lock, f"{type(err).__name__}: {err}")
        finally:
            with lock:
                state["pending"] -= 1
        if answer.crashed:
            return _crashed(state, lock, answer.message, answer.to_dict())
        with lock:
            state["crashes"] = 0
            state["seconds"] = 0.8 * state["seconds"] + 0.2 * answer.seconds
        if answer.status == "unreadable":
            return JSONResponse({"detail": answer.message, **answer.to_dict()}, status_code=400)
        return JSONResponse(to_jsonable({"file": name, **answer.to_dict()}))

    return app


def _crashed(state: Dict[str, Any], lock: threading.Lock, message: str, extra: Optional[dict] = None) -> JSONResponse:
    """The 500 of a request that failed inside the localizer, counted for /health."""
    with lock:
        state["crashes"] += 1
        state["last_crash"] = message
    return JSONResponse({"detail": f"internal error: {message}", **(extra or {})}, status_code=500)
