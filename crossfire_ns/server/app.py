"""The HTTP service: FastAPI on a ``MapLocalizer`` (FastAPI for its typed multipart forms, validation and
OpenAPI page at ``/docs``; uvicorn serves it).

* ``GET /health``: ``{"status": "ok", "map_ready": true, "pending": n, "maps": {name: ready}}`` for the default map;
  503 with ``"status": "unavailable"`` once its last ``CRASHES_UNAVAILABLE`` localizations all failed inside the
  localizer (until one succeeds).
* ``GET /map``: method, run and checkpoint names (no paths), training cameras, the pose conventions of the answers.
* ``POST /localize``: multipart ``image`` (PNG or JPEG); optional form fields ``fx``, ``fy``, ``cx``, ``cy`` (all four,
  in pixels; absent: the training camera's, with a warning), ``prior`` (JSON 4x4 camera-to-world in the data's
  original frame), ``sequence`` (an id: the previous estimate of that sequence is the prior). The answer: ``status``,
  ``transform_matrix`` (camera-to-world, OpenGL, original frame, as in poses.json), ``colmap`` (``qvec``, ``tvec``:
  world-to-camera), ``covariance`` (6x6: world rotation vector, then camera centre; ``Localization.covariance``),
  inliers, seconds, message, warnings, and ``map`` (the name of the map that answered).
* Several maps in one service, each under its own name: ``GET /maps`` lists them (name, method, health) and those
  being loaded; ``GET /maps/{name}`` describes one as ``/map`` does; ``POST /maps/{name}/localize`` localizes against
  it (the same form and answer as ``/localize``, which answers for the default map); ``POST /maps/{name}`` with a
  form field ``config`` (a config.yml under the server's map root) loads another map while the others keep serving,
  only on a server with a token (201 with its description; 409 when the name is taken, 403 outside the root). Each
  map has its own queue and health.

Limits come before work (``crossfire_ns.server.guard``: host, token, declared size, then the body counted as read).
Bad requests get a 4xx naming the problem: 400 (an image that is not PNG/JPEG, intrinsics that do not fit the image,
a prior that is not a rigid 4x4), 401 (token), 404 (a map not served), 408 (a stalled body), 413 (an upload over
``max_upload_bytes`` or an image whose header declares more than ``max_pixels``); an internal failure is a 500 for that
request only. Decoding and localization run in a worker thread, one request at a time per map; at most ``queue_size``
wait, more get a 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from typing_extensions import Annotated

from crossfire_ns.errors import CrossfireInputError
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
DEFAULT_MAP = "default"
"""Name of the map the single-map routes (``/map``, ``/localize``) answer for, unless named otherwise."""
MAX_MAPS = 16
"""Maps one service holds at most (each holds its model in memory)."""
MAP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
"""What a map's name may be: it is part of the URL."""

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


class ServedMap:
    """One map the service answers for: its localizer, its queue (one localization at a time, ``queue_size``
    waiting), its health and its sequences."""

    def __init__(self, name: str, map_localizer: MapLocalizer, queue_size: int, max_pixels: Optional[int]) -> None:
        self.name = name
        self.localizer = map_localizer
        self.queue_size = queue_size
        self.max_pixels = (
            pixel_cap(getattr(map_localizer, "max_image_side", None)) if max_pixels is None else max_pixels
        )
        self.state: Dict[str, Any] = {"pending": 0, "crashes": 0, "last_crash": "", "seconds": 1.0}
        self.sequences: "OrderedDict[str, None]" = OrderedDict()
        self.lock = threading.Lock()
        self.work = threading.Lock()  # one image decoded and localized at a time: memory stays that of one request

    @property
    def ready(self) -> bool:
        return self.state["crashes"] < CRASHES_UNAVAILABLE

    def health(self) -> Dict[str, Any]:
        """``status``, ``map_ready``, ``pending`` and, when not ready, why."""
        body: Dict[str, Any] = {
            "status": "ok" if self.ready else "unavailable",
            "map_ready": self.ready,
            "pending": self.state["pending"],
        }
        if not self.ready:
            body["detail"] = (
                f"the last {self.state['crashes']} localizations failed inside the localizer: {self.state['last_crash']}"
            )
        return body

    def describe(self, max_upload_bytes: int) -> Dict[str, Any]:
        """Method, run and checkpoint names (no paths), training cameras, conventions and limits."""
        crossfire_map = self.localizer.map
        cams = crossfire_map.train_cameras
        return to_jsonable(
            {
                "name": self.name,
                "run": _name(None if crossfire_map.config_path is None else Path(crossfire_map.config_path).parent),
                "checkpoint": _name(crossfire_map.checkpoint),
                "step": crossfire_map.step,
                "method": crossfire_map.method,
                "matcher": matcher_name(self.localizer.matcher),
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
                "max_pixels": self.max_pixels,
                "image_formats": list(IMAGE_FORMATS),
                "queue_size": self.queue_size,
            }
        )

    def remember(self, sequence: Optional[str]) -> None:
        """Keep at most ``MAX_SEQUENCES`` sequences: the one unused longest is forgotten."""
        if sequence is None:
            return
        with self.lock:
            self.sequences[sequence] = None
            self.sequences.move_to_end(sequence)
            forgotten = [self.sequences.popitem(last=False)[0] for _ in range(len(self.sequences) - MAX_SEQUENCES)]
        for old in forgotten:
            self.localizer.end_sequence(old)

    def decode_and_localize(
        self,
        data: IO[bytes],
        name: str,
        K: Optional[np.ndarray],
        prior_c2w: Optional[np.ndarray],
        sequence: Optional[str],
    ) -> Localization:
        """The request's work, in a worker thread: decode (header checked first), check K against the image, localize."""
        with self.work:
            try:
                rgb = decode_image(data, f"'image' ({name})", max_pixels=self.max_pixels)
                if K is not None:
                    check_intrinsics(K, rgb.shape[1], rgb.shape[0], "intrinsics")
            except ImageTooLargeError as err:
                raise BadRequest(str(err), 413) from None
            except QueryImageError as err:
                raise BadRequest(str(err)) from None
            self.remember(sequence)
            return self.localizer.localize(rgb, K, prior_c2w, sequence)

    def busy(self) -> JSONResponse:
        retry = max(1, math.ceil(self.state["seconds"] * self.state["pending"]))
        return JSONResponse(
            {
                "detail": f"busy: {self.state['pending']} requests ahead (one localizing, a queue of {self.queue_size}); "
                f"retry in {retry} s"
            },
            status_code=503,
            headers={"Retry-After": str(retry)},
        )

    def crashed(self, message: str, extra: Optional[dict] = None) -> JSONResponse:
        """The 500 of a request that failed inside the localizer, counted for /health."""
        with self.lock:
            self.state["crashes"] += 1
            self.state["last_crash"] = message
        return JSONResponse({"detail": f"internal error: {message}", **(extra or {})}, status_code=500)

    async def localize(
        self, image: Optional[UploadFile], fields: Dict[str, Optional[str]], max_upload_bytes: int
    ) -> JSONResponse:
        """Check the form, wait in the queue, localize in a worker thread; the JSON answer or the error's."""
        if image is None or isinstance(image, str):
            raise BadRequest("no 'image' file in the multipart form (send the image as the 'image' field)")
        size = image.size if image.size is not None else len(image.file.read())
        if size > max_upload_bytes:
            raise BadRequest(f"'image' is larger than the {max_upload_bytes} bytes this server accepts", 413)
        if not size:
            raise BadRequest("'image' is empty")
        image.file.seek(0)
        K = form_intrinsics(fields["fx"], fields["fy"], fields["cx"], fields["cy"])
        prior_c2w = form_prior(fields["prior"])
        sequence_id = form_sequence(fields["sequence"])
        name = (image.filename or "image")[:200]
        with self.lock:
            if self.state["pending"] > self.queue_size:
                return self.busy()
            self.state["pending"] += 1
        try:
            answer = await run_in_threadpool(self.decode_and_localize, image.file, name, K, prior_c2w, sequence_id)
        except BadRequest:
            raise
        except Exception as err:  # noqa: BLE001  this request fails, the server goes on
            return self.crashed(f"{type(err).__name__}: {err}")
        finally:
            with self.lock:
                self.state["pending"] -= 1
        if answer.crashed:
            return self.crashed(answer.message, answer.to_dict())
        with self.lock:
            self.state["crashes"] = 0
            self.state["seconds"] = 0.8 * self.state["seconds"] + 0.2 * answer.seconds
        if answer.status == "unreadable":
            return JSONResponse({"detail": answer.message, **answer.to_dict()}, status_code=400)
        return JSONResponse(to_jsonable({"file": name, "map": self.name, **answer.to_dict()}))


MapLoader = Callable[[Path], MapLocalizer]
"""Builds (and warms up) the localizer of a config.yml: how ``POST /maps/{name}`` adds a map."""


def check_map_name(name: str) -> str:
    """``name`` when it can name a map (1-64 letters, digits, ``.``, ``_``, ``-``; not starting with a dot)."""
    if not MAP_NAME.fullmatch(name):
        raise BadRequest(
            f"a map name is 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'; got {name[:80]!r}"
        )
    return name


def map_config_inside(root: Path, text: Optional[str]) -> Path:
    """The config.yml named by ``text`` (relative to ``root``, or absolute), refused unless it resolves inside
    ``root``: a client chooses which map to load, never which file on the server is unpickled."""
    if text is None or not text.strip() or len(text) > 4096 or "\x00" in text:
        raise BadRequest("give 'config': the map's config.yml, relative to the server's --map-root")
    root = root.resolve()
    path = (root / text.strip()).resolve()
    if root != path and root not in path.parents:
        raise BadRequest("'config' must lie inside the server's --map-root", 403)
    if path.name != "config.yml" or not path.is_file():
        raise BadRequest("'config' must name a config.yml under the server's --map-root", 404)
    return path


def create_app(
    map_localizer: MapLocalizer,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    queue_size: int = QUEUE_SIZE,
    token: Optional[str] = None,
    allowed_hosts: Optional[Sequence[str]] = None,
    max_pixels: Optional[int] = None,
    body_timeout: float = BODY_TIMEOUT,
    name: str = DEFAULT_MAP,
    more_maps: Optional[Mapping[str, MapLocalizer]] = None,
    map_loader: Optional[MapLoader] = None,
    map_root: Optional[Path] = None,
    max_maps: int = MAX_MAPS,
) -> FastAPI:
    """The service on a loaded map (``name``) and ``more_maps``: with ``token`` every path but /health needs it;
    ``allowed_hosts`` (None: any) the Host names answered; ``max_pixels`` (None: ``pixel_cap`` of each localizer's
    ``max_image_side``) the most pixels an image's header may declare. ``POST /maps/{name}`` adds a map with
    ``map_loader`` from a config.yml under ``map_root``, and only with a token (otherwise it answers 403)."""
    app = FastAPI(title="crossfire localization", description=__doc__)
    app.add_middleware(
        RequestGuard,
        max_body_bytes=max_upload_bytes + FORM_BYTES,
        token=token,
        allowed_hosts=allowed_hosts,
        body_timeout=body_timeout,
    )
    maps: Dict[str, ServedMap] = {}
    for map_name, localizer in {name: map_localizer, **dict(more_maps or {})}.items():
        maps[check_map_name(map_name)] = ServedMap(map_name, localizer, queue_size, max_pixels)
    default = maps[name]
    loading: Dict[str, str] = {}
    """Maps being added: name -> the config asked for."""
    registry = threading.Lock()

    def served(map_name: str) -> ServedMap:
        found = maps.get(map_name)
        if found is None:
            state = "is being loaded" if map_name in loading else "is not served here"
            raise BadRequest(f"map {map_name[:80]!r} {state} (GET /maps lists the maps)", 404)
        return found

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, err: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status_code)

    @app.get("/health")
    async def health() -> JSONResponse:
        body = default.health()
        body["maps"] = {map_name: entry.ready for map_name, entry in list(maps.items())}
        return JSONResponse(body, status_code=200 if default.ready else 503)

    @app.get("/map")
    async def map_info() -> Dict[str, Any]:
        return default.describe(max_upload_bytes)

    @app.get("/maps")
    async def list_maps() -> Dict[str, Any]:
        return {
            "default": name,
            "maps": [
                {"name": entry.name, "method": entry.localizer.map.method, **entry.health()}
                for entry in list(maps.values())
            ],
            "loading": sorted(loading),
            "adding": "POST /maps/{name} with a form field 'config'"
            if map_loader is not None and map_root is not None and token is not None
            else "disabled (needs a token and --map-root)",
        }

    @app.get("/maps/{map_name}")
    async def describe_map(map_name: str) -> Dict[str, Any]:
        return served(map_name).describe(max_upload_bytes)

    @app.post("/maps/{map_name}", status_code=201)
    async def add_map(map_name: str, config: Annotated[Optional[str], Form()] = None) -> JSONResponse:
        if map_loader is None or map_root is None or token is None:
            raise BadRequest("adding maps is disabled: the server needs a token and --map-root for it", 403)
        check_map_name(map_name)
        path = map_config_inside(map_root, config)
        with registry:
            if map_name in maps or map_name in loading:
                raise BadRequest(f"map {map_name!r} exists already (or is being loaded)", 409)
            if len(maps) + len(loading) >= max_maps:
                raise BadRequest(f"this server holds {max_maps} maps, the most it is set to", 409)
            loading[map_name] = str(path)
        try:
            localizer = await run_in_threadpool(map_loader, path)
        except CrossfireInputError as err:
            raise BadRequest(f"map {map_name!r} cannot be loaded: {err}", 400) from None
        except Exception as err:  # noqa: BLE001  the others keep serving
            raise BadRequest(f"map {map_name!r} cannot be loaded: {type(err).__name__}: {err}", 500) from None
        finally:
            with registry:
                loading.pop(map_name, None)
        with registry:
            maps[map_name] = ServedMap(map_name, localizer, queue_size, max_pixels)
        return JSONResponse(maps[map_name].describe(max_upload_bytes), status_code=201)

    @app.post("/localize")
    async def localize(
        image: Annotated[Optional[UploadFile], File()] = None,
        fx: Annotated[Optional[str], Form()] = None,
        fy: Annotated[Optional[str], Form()] = None,
        cx: Annotated[Optional[str], Form()] = None,
        cy: Annotated[Optional[str], Form()] = None,
        prior: Annotated[Optional[str], Form()] = None,
        sequence: Annotated[Optional[str], Form()] = None,
    ) -> JSONResponse:
        fields = {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "prior": prior, "sequence": sequence}
        return await default.localize(image, fields, max_upload_bytes)

    @app.post("/maps/{map_name}/localize")
    async def localize_on(
        map_name: str,
        image: Annotated[Optional[UploadFile], File()] = None,
        fx: Annotated[Optional[str], Form()] = None,
        fy: Annotated[Optional[str], Form()] = None,
        cx: Annotated[Optional[str], Form()] = None,
        cy: Annotated[Optional[str], Form()] = None,
        prior: Annotated[Optional[str], Form()] = None,
        sequence: Annotated[Optional[str], Form()] = None,
    ) -> JSONResponse:
        fields = {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "prior": prior, "sequence": sequence}
        return await served(map_name).localize(image, fields, max_upload_bytes)

    return app
