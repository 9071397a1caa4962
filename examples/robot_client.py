"""A robot's client of ns-localize-server, without ROS: send the frames of a folder in order as one sequence and print
each pose with its uncertainty.

    export CROSSFIRE_SERVER_TOKEN=...          # if the server has one
    python examples/robot_client.py FRAMES_DIR --url http://127.0.0.1:8750 --fx 138.56 --fy 138.56 --cx 80 --cy 60 \\
        [--map floor2] [--sequence robot-1] [--period 1.0]

Needs only the standard library and ``requests``. Frames are the folder's PNG and JPEG files sorted by name (a camera
would give them one at a time the same way). Every frame carries the sequence id, so the server starts each frame from
the previous estimate. For each frame it prints one JSON line: the frame's number and name, ``status``, the
camera-to-world pose (OpenGL axes, the map's original frame), the camera centre, its standard deviations (from the
6x6 ``covariance``: rotation about the world axes in degrees, then the centre in map units) and the full covariance,
ready for a filter (rotation vector first, then centre). A busy server (503) is retried after its ``Retry-After``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import requests

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
"""What the server decodes."""


def frames(folder: Path) -> Iterator[Path]:
    """The folder's images, sorted by name."""
    yield from sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def summary(index: int, frame: Path, answer: Dict) -> Dict:
    """What a robot logs of one answer: status, pose, centre, standard deviations and the covariance."""
    line: Dict = {"frame": index, "file": frame.name, "status": answer.get("status"), "map": answer.get("map")}
    pose = answer.get("transform_matrix")
    if pose is not None:
        line["c2w"] = pose
        line["centre"] = [row[3] for row in pose[:3]]
    covariance: Optional[List[List[float]]] = answer.get("covariance")
    if covariance is not None:
        line["sigma_rotation_deg"] = [math.degrees(math.sqrt(max(covariance[i][i], 0.0))) for i in range(3)]
        line["sigma_centre"] = [math.sqrt(max(covariance[i][i], 0.0)) for i in range(3, 6)]
        line["covariance"] = covariance
    if answer.get("status") != "localized":
        line["message"] = answer.get("message") or answer.get("detail")
    return line


def localize(
    session: requests.Session, url: str, frame: Path, form: Dict[str, str], retries: int = 5
) -> requests.Response:
    """POST one frame; a 503 (busy) is retried after the server's ``Retry-After``, up to ``retries`` times."""
    for _ in range(retries + 1):
        with frame.open("rb") as handle:
            response = session.post(url, files={"image": (frame.name, handle)}, data=form, timeout=120)
        if response.status_code != 503:
            return response
        time.sleep(float(response.headers.get("Retry-After", "1")))
    return response


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of frames (PNG/JPEG), sent in name order")
    parser.add_argument("--url", default="http://127.0.0.1:8750", help="the server")
    parser.add_argument("--map", default=None, help="a map's name (/maps/NAME/localize); default: the server's")
    parser.add_argument("--sequence", default="robot-1", help="sequence id: each frame starts from the last estimate")
    parser.add_argument("--fx", type=float, help="intrinsics in pixels (all four, or none: the training camera's)")
    parser.add_argument("--fy", type=float)
    parser.add_argument("--cx", type=float)
    parser.add_argument("--cy", type=float)
    parser.add_argument("--period", type=float, default=0.0, help="seconds between frames (a camera's rate)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    args = parser.parse_args(argv)

    intrinsics = [args.fx, args.fy, args.cx, args.cy]
    if any(v is not None for v in intrinsics) and None in intrinsics:
        parser.error("give all of --fx --fy --cx --cy, or none")
    form = {"sequence": args.sequence}
    if args.fx is not None:
        form.update(fx=str(args.fx), fy=str(args.fy), cx=str(args.cx), cy=str(args.cy))
    endpoint = f"{args.url.rstrip('/')}/maps/{args.map}/localize" if args.map else f"{args.url.rstrip('/')}/localize"
    session = requests.Session()
    token = os.environ.get("CROSSFIRE_SERVER_TOKEN")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"

    failures = 0
    for index, frame in enumerate(frames(args.folder)):
        if args.max_frames and index >= args.max_frames:
            break
        started = time.monotonic()
        try:
            response = localize(session, endpoint, frame, form)
            answer = response.json()
        except (requests.RequestException, ValueError) as err:
            answer = {"status": "error", "message": f"{type(err).__name__}: {err}"}
        else:
            if response.status_code != 200:
                answer = {**answer, "status": answer.get("status") or f"http {response.status_code}"}
        line = summary(index, frame, answer)
        failures += line["status"] != "localized"
        print(json.dumps(line), flush=True)
        time.sleep(max(0.0, args.period - (time.monotonic() - started)))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
