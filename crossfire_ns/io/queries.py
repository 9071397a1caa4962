"""Reading a folder of query images, optionally described by a nerfstudio-format ``transforms.json``.

Problems with the set as a whole (missing folder, no images, malformed ``transforms.json``, a frame pointing to
a missing file) raise ``QueryInputError``: nothing sensible can run. Problems with one image (corrupt file,
size disagreeing with its intrinsics) raise ``QueryImageError`` from ``read_query_image``, so the caller can
record that query as unreadable and go on with the others.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.geometry import pose_matrix, scale_intrinsics

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TRANSFORMS_NAME = "transforms.json"
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
PERSPECTIVE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
FISHEYE_MODELS = ("OPENCV_FISHEYE",)
IMAGE_FORMATS = ("PNG", "JPEG")
"""The only decoders a query image reaches (PIL's names); other formats' parsers are never run on untrusted data."""
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
"""The first bytes of a PNG and of a JPEG file."""
MAX_IMAGE_PIXELS = 50_000_000
"""Ceiling on a query's pixel count (a 48-megapixel phone photo fits), read from the header before decoding."""
PIXELS_SIDE_FACTOR = 16
"""With a cap on the longer side localized at, images whose side exceeds this many times it are refused."""
FOCAL_RANGE = (0.1, 20.0)
"""Accepted focal lengths as fractions of the image's longer side: fields of view from about 157 to 3 degrees."""


class QueryInputError(CrossfireInputError):
    """The query set cannot be used at all; the message names the file and says how to fix it."""


class QueryImageError(Exception):
    """One query image cannot be used; the message names the file and says how to fix it."""


class ImageTooLargeError(QueryImageError):
    """The image's header declares more pixels than this reader decodes."""


def pixel_cap(max_image_side: Optional[int] = None) -> int:
    """Most pixels decoded for a query localized at ``max_image_side``: ``(PIXELS_SIDE_FACTOR * side)**2``, at most
    ``MAX_IMAGE_PIXELS`` (decoding is the memory a request costs before it is downscaled)."""
    if max_image_side is None:
        return MAX_IMAGE_PIXELS
    return min(MAX_IMAGE_PIXELS, (PIXELS_SIDE_FACTOR * max(1, int(max_image_side))) ** 2)


def check_intrinsics(K: np.ndarray, width: int, height: int, where: str) -> None:
    """``QueryImageError`` naming ``where`` unless ``K`` is a finite pinhole matrix for a ``width`` x ``height``
    image: positive focal lengths within ``FOCAL_RANGE`` of its longer side, the principal point inside it."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise QueryImageError(f"{where}: intrinsics must be a finite 3x3 matrix, got {K.tolist()}")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    side = max(width, height)
    low, high = FOCAL_RANGE[0] * side, FOCAL_RANGE[1] * side
    for key, value in (("fx", fx), ("fy", fy)):
        if not low <= value <= high:
            raise QueryImageError(
                f"{where}: {key}={value:g} px is not a focal length for a {width}x{height} image (expected "
                f"{low:g} to {high:g} px, {FOCAL_RANGE[0]:g} to {FOCAL_RANGE[1]:g} times its longer side). Give the "
                f"intrinsics of this image, in pixels at its resolution."
            )
    if not (0.0 <= cx <= width and 0.0 <= cy <= height):
        raise QueryImageError(
            f"{where}: principal point ({cx:g}, {cy:g}) lies outside the {width}x{height} image. Give cx, cy in "
            f"pixels of this image (cx = width / 2 for a centred one)."
        )


@dataclass
class QueryImage:
    """One query: where its image is and what we know about its camera."""

    path: Path
    file_path: str
    """As written in transforms.json, or the path relative to the query folder; the key of this query in outputs."""
    K: Optional[np.ndarray] = None
    """3x3 intrinsics (nerfstudio convention: pixel centres at +0.5); None when the folder gives none."""
    dist_coeffs: Optional[np.ndarray] = None
    """OpenCV order: (k1, k2, p1, p2, k3) for perspective models, (k1, k2, k3, k4) for fisheye; None if zero."""
    width: Optional[int] = None
    """Expected image width from transforms.json (checked on read); None when unknown."""
    height: Optional[int] = None
    c2w_gt: Optional[np.ndarray] = None
    """Ground-truth 4x4 camera-to-world (OpenGL, the data's original frame), from ``transform_matrix``."""
    camera_model: str = "PINHOLE"

    @property
    def fisheye(self) -> bool:
        return self.camera_model in FISHEYE_MODELS

    @property
    def has_gt(self) -> bool:
        return self.c2w_gt is not None


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _override_matrix(intrinsics_override: Union[np.ndarray, Sequence[float]]) -> np.ndarray:
    """A 3x3 K from a 3x3 matrix or ``(fx, fy, cx, cy)``."""
    values = np.asarray(intrinsics_override, dtype=np.float64)
    if values.shape == (3, 3):
        return values.copy()
    if values.shape == (4,):
        fx, fy, cx, cy = values
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    raise QueryInputError(
        f"intrinsics override: expected a 3x3 matrix or (fx, fy, cx, cy), got shape {values.shape}. Pass four numbers."
    )


def load_query_set(
    query_dir: Union[str, Path], intrinsics_override: Optional[Union[np.ndarray, Sequence[float]]] = None
) -> Tuple[List[QueryImage], List[str]]:
    """The queries of ``query_dir`` and a list of warnings worth showing to the user.

    With ``query_dir/transforms.json`` (nerfstudio format) only its frames are queries, with their intrinsics,
    distortion and optional ground truth (``transform_matrix``). Without it every png/jpg/jpeg directly in the
    folder is a query, sorted by name, with ``K=None`` (the caller picks a default). ``intrinsics_override``
    (3x3 or ``(fx, fy, cx, cy)``) replaces the intrinsics of every query and drops any distortion.
    """
    query_dir = Path(query_dir)
    if not query_dir.exists():
        raise QueryInputError(
            f"{query_dir}: query folder does not exist. Pass an existing folder holding the query images "
            f"(and optionally a {TRANSFORMS_NAME})."
        )
    if not query_dir.is_dir():
        raise QueryInputError(f"{query_dir}: is a file, not a folder. Pass the folder that holds the query images.")
    override = None if intrinsics_override is None else _override_matrix(intrinsics_override)
    transforms = query_dir / TRANSFORMS_NAME
    if transforms.is_file():
        queries, warnings = _from_transforms(query_dir, transforms, override)
    else:
        queries, warnings = _from_folder(query_dir, override)
    return queries, warnings


def _from_folder(query_dir: Path, override: Optional[np.ndarray]) -> Tuple[List[QueryImage], List[str]]:
    images = sorted((p for p in query_dir.iterdir() if _is_image(p)), key=lambda p: p.name)
    if not images:
        nested = [p for p in query_dir.rglob("*") if _is_image(p)]
        hint = "Put the query images (.png, .jpg, .jpeg) in it"
        if nested:
            folders = sorted({str(p.parent.relative_to(query_dir)) for p in nested})[:3]
            hint = (
                f"Found {len(nested)} images in sub-folders ({', '.join(folders)}): pass that folder instead, "
                f"or add a {TRANSFORMS_NAME} listing them"
            )
        raise QueryInputError(f"{query_dir}: no query images (.png, .jpg, .jpeg) in this folder. {hint}.")
    queries = [QueryImage(path=p, file_path=p.name, K=None if override is None else override.copy()) for p in images]
    warnings = []
    if override is None:
        warnings.append(
            f"{query_dir}: no {TRANSFORMS_NAME}, so query intrinsics are unknown and a default will be used; "
            f"add a {TRANSFORMS_NAME} with fl_x, fl_y, cx, cy, w, h or pass the intrinsics explicitly."
        )
    return queries, warnings


def _number(value: Any, key: str, where: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QueryInputError(f"{where}: '{key}' must be a finite number, got {value!r}. {hint}")
    return float(value)


def _from_transforms(
    query_dir: Path, transforms: Path, override: Optional[np.ndarray]
) -> Tuple[List[QueryImage], List[str]]:
    hint = "Fix transforms.json (nerfstudio format) or remove it to use every image in the folder without intrinsics."
    try:
        meta = json.loads(transforms.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise QueryInputError(
            f"{transforms}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}. {hint}"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise QueryInputError(f"{transforms}: cannot be read ({err}). {hint}") from err
    if not isinstance(meta, dict):
        raise QueryInputError(f"{transforms}: the top level must be an object with a 'frames' list. {hint}")
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise QueryInputError(f"{transforms}: missing key 'frames' (a list of frames with 'file_path'). {hint}")
    if not frames:
        raise QueryInputError(f"{transforms}: 'frames' is empty, so there are no queries. {hint}")

    warnings: List[str] = []
    queries: List[QueryImage] = []
    without_intrinsics = 0
    for index, frame in enumerate(frames):
        where = f"{transforms} frames[{index}]"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str) or not frame["file_path"]:
            raise QueryInputError(f"{where}: missing key 'file_path' (the image path relative to {query_dir}). {hint}")
        file_path = frame["file_path"]
        where = f"{transforms} frames[{index}] ('{file_path}')"
        path = query_dir / file_path
        if not path.is_file():
            raise QueryInputError(
                f"{where}: image file {path} does not exist. Fix 'file_path' (it is relative to {query_dir}) "
                f"or add the image."
            )
        merged: Dict[str, Any] = {**meta, **frame}  # per-frame keys override global ones
        model = merged.get("camera_model", "OPENCV")
        if model not in PERSPECTIVE_MODELS + FISHEYE_MODELS:
            raise QueryInputError(
                f"{where}: camera_model {model!r} is not supported; supported: "
                f"{', '.join(PERSPECTIVE_MODELS + FISHEYE_MODELS)}. Undistort the queries to PINHOLE first."
            )
        K, width, height = _intrinsics(merged, where, hint)
        dist = _distortion(merged, model, where, hint)
        if override is not None:
            K, dist = override.copy(), None
        elif K is None:
            without_intrinsics += 1
        queries.append(
            QueryImage(
                path=path,
                file_path=file_path,
                K=K,
                dist_coeffs=dist,
                width=width,
                height=height,
                c2w_gt=_ground_truth(frame, where, hint),
                camera_model=model if model in FISHEYE_MODELS or dist is not None else "PINHOLE",
            )
        )

    if without_intrinsics:
        warnings.append(
            f"{transforms}: {without_intrinsics} frame(s) have no intrinsics (fl_x, fl_y, cx, cy, w, h), so a "
            f"default will be used; add them globally or per frame."
        )
    with_gt = sum(q.has_gt for q in queries)
    if 0 < with_gt < len(queries):
        warnings.append(
            f"{transforms}: only {with_gt} of {len(queries)} frames have a 'transform_matrix'; errors and recall "
            f"are computed on those."
        )
    listed = {q.path.resolve() for q in queries}
    unlisted = [p.name for p in sorted(query_dir.iterdir()) if _is_image(p) and p.resolve() not in listed]
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (", ..." if len(unlisted) > 5 else "")
        warnings.append(
            f"{query_dir}: {len(unlisted)} image(s) not listed in {TRANSFORMS_NAME} are ignored ({shown}); "
            f"add frames for them to use them."
        )
    return queries, warnings


def _intrinsics(
    merged: Dict[str, Any], where: str, hint: str
) -> Tuple[Optional[np.ndarray], Optional[int], Optional[int]]:
    present = [k for k in INTRINSIC_KEYS if k in merged]
    if not present:
        return None, None, None
    missing = [k for k in INTRINSIC_KEYS if k not in merged]
    if missing:
        raise QueryInputError(
            f"{where}: intrinsics incomplete, missing {', '.join(repr(k) for k in missing)} (all of "
            f"{', '.join(INTRINSIC_KEYS)} are needed, globally or per frame). {hint}"
        )
    fx, fy, cx, cy = (_number(merged[k], k, where, hint) for k in ("fl_x", "fl_y", "cx", "cy"))
    size = []
    for key in ("w", "h"):
        value = _number(merged[key], key, where, hint)
        if value <= 0 or value != int(value):
            raise QueryInputError(f"{where}: '{key}' must be a positive integer (pixels), got {merged[key]!r}. {hint}")
        size.append(int(value))
    if fx <= 0 or fy <= 0:
        raise QueryInputError(f"{where}: focal lengths must be positive, got fl_x={fx}, fl_y={fy}. {hint}")
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    try:
        check_intrinsics(K, size[0], size[1], where)
    except QueryImageError as err:
        raise QueryInputError(f"{err} {hint}") from err
    return K, size[0], size[1]


def _distortion(merged: Dict[str, Any], model: str, where: str, hint: str) -> Optional[np.ndarray]:
    """nerfstudio's (k1, k2, k3, k4, p1, p2) -> OpenCV order, None when there is no distortion."""
    if "distortion_params" in merged:
        params = merged["distortion_params"]
        if not isinstance(params, list) or len(params) != 6:
            raise QueryInputError(f"{where}: 'distortion_params' must be [k1, k2, k3, k4, p1, p2]. {hint}")
        values = dict(zip(DISTORTION_KEYS, (_number(v, "distortion_params", where, hint) for v in params)))
    else:
        values = {k: _number(merged[k], k, where, hint) if k in merged else 0.0 for k in DISTORTION_KEYS}
    if model not in FISHEYE_MODELS and values["k4"] != 0.0:
        raise QueryInputError(
            f"{where}: k4 is not supported for perspective cameras (as in nerfstudio, only k1, k2, k3, p1, p2). {hint}"
        )
    return opencv_distortion([values[k] for k in DISTORTION_KEYS], fisheye=model in FISHEYE_MODELS)


def opencv_distortion(params: Sequence[float], fisheye: bool = False) -> Optional[np.ndarray]:
    """nerfstudio's distortion parameters (k1, k2, k3, k4, p1, p2) in OpenCV's order: (k1, k2, p1, p2, k3) for a
    perspective camera, (k1, k2, k3, k4) for a fisheye; None when they are all zero."""
    k1, k2, k3, k4, p1, p2 = (float(v) for v in params)
    dist = np.array([k1, k2, k3, k4] if fisheye else [k1, k2, p1, p2, k3])
    return dist if np.any(dist) else None


def _ground_truth(frame: Dict[str, Any], where: str, hint: str) -> Optional[np.ndarray]:
    if "transform_matrix" not in frame or frame["transform_matrix"] is None:
        return None
    try:
        return pose_matrix(frame["transform_matrix"], f"{where}: 'transform_matrix'")
    except ValueError as err:
        raise QueryInputError(f"{err}. {hint}") from err


EXIF_ORIENTATION = 0x0112
"""The EXIF tag that asks viewers to rotate or flip the stored pixels."""


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PIL image as training sees images: alpha composited on white (nerfstudio's
    default background), 16-bit grey scaled to 8 bits (not clipped), palette and grey expanded; integer arithmetic,
    so a large image costs a few bytes a pixel, not float arrays."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.clip(np.asarray(image).astype(np.int64), 0, 65535)  # PNG's 16-bit grey opens as I;16 or I
        grey = ((grey * 255 + 32767) // 65535).astype(np.uint8)  # rounded: grey / 257 is never exactly half-way
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "F":
        grey = np.clip(np.round(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        colour, alpha = rgba[..., :3].astype(np.uint16), rgba[..., 3:].astype(np.uint16)
        # c * a / 255 + (255 - a), rounded; at most 255 * 255 + 127, so uint16 holds it, and never half-way
        return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _signature(source: Union[str, Path, IO[bytes]]) -> bytes:
    """The first bytes of a file or stream (the stream's position is kept)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            return handle.read(8)
    position = source.tell()
    head = source.read(8)
    source.seek(position)
    return head


def decode_image(
    source: Union[str, Path, IO[bytes]], name: str, max_pixels: Optional[int] = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PNG or JPEG file or stream (see ``image_to_rgb``); ``QueryImageError`` naming
    ``name`` when it is another format, unreadable, or asks for an EXIF rotation (nerfstudio trains on stored pixels),
    ``ImageTooLargeError`` when its header declares more than ``max_pixels`` pixels (checked before decoding)."""
    try:
        if not _signature(source).startswith(IMAGE_SIGNATURES):
            raise QueryImageError(
                f"{name}: cannot be read as an image: it is neither PNG nor JPEG, the formats accepted. Replace it "
                f"with a PNG/JPEG or remove it from the query set."
            )
        with Image.open(source, formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: the image is {width}x{height}, {width * height} pixels, more than the {max_pixels} "
                    f"decoded here. Downscale it (and its intrinsics by the same factor) before sending it."
                )
            image.load()
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            rgb = image_to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise QueryImageError(
            f"{name}: cannot be read as an image ({err}). Replace it with a valid PNG/JPEG or remove it "
            f"from the query set."
        ) from err
    if orientation not in (None, 1):
        raise QueryImageError(
            f"{name}: EXIF orientation {orientation} asks for the pixels to be rotated or flipped, which "
            f"ns-localize does not do (nerfstudio trains on stored pixels). Save the image upright without the tag "
            f"(e.g. PIL's ImageOps.exif_transpose, or exiftran -ai) and give intrinsics for the upright image."
        )
    return rgb


def read_query_image(query: QueryImage) -> np.ndarray:
    """The query image as (H, W, 3) uint8 RGB (``decode_image``); raises ``QueryImageError`` if it is unusable,
    also when its size disagrees with the intrinsics given for it."""
    rgb = decode_image(query.path, str(query.path))
    height, width = rgb.shape[:2]
    if query.width is not None and query.height is not None and (width, height) != (query.width, query.height):
        raise QueryImageError(
            f"{query.path}: image is {width}x{height} (WxH) but its intrinsics are for {query.width}x{query.height}. "
            f"Fix 'w'/'h' in transforms.json and scale fl_x, fl_y, cx, cy by the same factor, or supply the image "
            f"at {query.width}x{query.height}."
        )
    return rgb


def downscale_to(image: np.ndarray, K: np.ndarray, max_side: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(image, K)`` with the longer side at most ``max_side`` pixels (area-averaged; K scaled exactly as the
    pixels are, nerfstudio's convention); unchanged when it is already that small."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image, K
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return resized, scale_intrinsics(K, new_w / width, new_h / height)


def undistort_if_needed(
    image: np.ndarray, K: np.ndarray, dist_coeffs: Optional[np.ndarray], fisheye: bool = False
) -> np.ndarray:
    """The image as a pinhole camera with the same ``K`` would see it (a no-op without distortion).

    Keeping ``K`` keeps the query's intrinsics valid for PnP. ``K`` is in nerfstudio's convention (pixel centres
    at +0.5), so it is shifted by half a pixel for OpenCV, as nerfstudio's own undistortion does.
    """
    if dist_coeffs is None or not np.any(dist_coeffs):
        return image
    K_cv = np.asarray(K, dtype=np.float64).copy()
    K_cv[:2, 2] -= 0.5
    dist = np.asarray(dist_coeffs, dtype=np.float64).reshape(-1)
    if fisheye:
        return cv2.fisheye.undistortImage(image, K_cv, dist[:4], Knew=K_cv)
    return cv2.undistort(image, K_cv, dist, None, K_cv)
