"""The crossfire controls of nerfstudio's viewer: stable descriptor PCA, click-to-compare similarity, localized cameras.

``CrossfireViewerTools`` is an ``nn.Module`` without parameters that the model holds as ``crossfire_viewer``:
nerfstudio's viewer walks the pipeline's modules and installs every public ``ViewerElement`` it finds (here in
the folder "Custom Elements/model/crossfire_viewer", in the alphabetical order of the attribute names) and sets up
every ``ViewerControl``. The model calls ``image_outputs`` on each rendered frame to add two outputs:

* ``descriptor_pca``: RGB from a PCA projection fitted once (on the first frame, or on the next frame after
  "Refresh descriptor PCA") and then kept, so colours do not jump as the camera moves;
* ``descriptor_similarity``: cosine similarity to a reference descriptor picked by clicking the scene, as a turbo
  heat map from the "Similarity floor" to 1 over the dimmed scene.

Viewer callbacks run under the viewer's ``train_lock`` (nerfstudio wraps them); the click callback takes the lock
itself before it renders. Status lines are markdown (``ViewerMarkdown``), whose updates fire no callback, so
updating them during a render cannot trigger another render.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerCheckbox,
    ViewerClick,
    ViewerControl,
    ViewerElement,
    ViewerSlider,
    ViewerText,
)
from torch import Tensor, nn

from crossfire_ns.io.index_file import INDEX_FILE
from crossfire_ns.io.queries import QueryInputError, load_query_set
from crossfire_ns.map import frame_normalization
from crossfire_ns.viewer.cameras import (
    CameraMarker,
    error_segments,
    load_thumbnail,
    localized_cameras,
    virtual_view_markers,
    viser_pose,
)
from crossfire_ns.viewer.pca import PCAProjection, apply_pca, fit_pca
from crossfire_ns.viewer.similarity import cosine_similarity_map, similarity_heatmap

if TYPE_CHECKING:
    from viser import ViserServer

VISER_SCALE = 10.0
"""nerfstudio's VISER_NERFSTUDIO_SCALE_RATIO: the viewer draws the normalised scene 10x larger."""
MIN_ACCUMULATION = 0.5
"""Pixels (and clicked rays) with less accumulated opacity see empty space: not used for the PCA, not picked."""
SCENE_ROOT = "/crossfire"
"""viser scene-tree folder of everything these tools draw."""


class ViewerMarkdown(ViewerElement[str]):
    """Read-only text in a custom-elements folder. Setting ``content`` fires no callback (unlike ``ViewerText``,
    whose updates make nerfstudio re-render), so it can be updated from a render or a callback."""

    def __init__(self, name: str, content: str = "") -> None:
        super().__init__(name)
        self._content = content

    def _create_gui_handle(self, viser_server: "ViserServer") -> None:
        self.gui_handle = viser_server.gui.add_markdown(self._content)  # type: ignore[assignment]

    def install(self, viser_server: "ViserServer") -> None:
        self._create_gui_handle(viser_server)

    @property
    def content(self) -> str:
        return self._content

    @content.setter
    def content(self, content: str) -> None:
        self._content = content
        if self.gui_handle is not None:
            self.gui_handle.content = content  # type: ignore[union-attr]


class CrossfireViewerTools(nn.Module):
    """Viewer elements and per-frame outputs for a crossfire model (holds no parameters, adds nothing to checkpoints).

    Attribute names set the order in the viewer panel: ``d*`` descriptor tools, ``l*`` localized cameras.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._model = [model]  # a list, so the model is not registered as a child module (no recursion)
        self._projection: Optional[PCAProjection] = None
        self._refit_pca = True
        self._reference: Optional[Tensor] = None
        self._reference_point: Optional[np.ndarray] = None
        self._markers: List[CameraMarker] = []
        self._handles: Dict[str, Any] = {}
        self.control = ViewerControl()

        self.d1_refresh_pca = ViewerButton("Refresh descriptor PCA", cb_hook=lambda _: self.request_pca_refit())
        self.d2_pick_reference = ViewerButton(
            "Pick similarity reference", cb_hook=lambda _: self.start_picking_reference()
        )
        self.d3_similarity_floor = ViewerSlider(
            "Similarity floor",
            0.5,
            -1.0,
            0.95,
            0.05,
            hint="descriptor_similarity: cosine similarities from this value to 1 are coloured; lower ones are grey",
        )
        self.d4_descriptor_info = ViewerMarkdown(
            "descriptor info",
            "Outputs **descriptor_pca** (fitted once) and **descriptor_similarity** (pick a reference first).",
        )
        self.l1_poses_file = ViewerText("poses.json", "", hint="the poses.json written by ns-localize")
        self.l2_query_dir = ViewerText(
            "Query folder", "", hint="optional: the --query-dir of ns-localize, for thumbnails and ground truth"
        )
        self.l3_load_poses = ViewerButton("Load localized cameras", cb_hook=lambda _: self.load_from_gui())
        self.l4_show_ground_truth = ViewerCheckbox(
            "Show ground truth", True, cb_hook=lambda element: self.set_ground_truth_visible(element.value)
        )
        self.l5_clear_poses = ViewerButton("Clear localized cameras", cb_hook=lambda _: self.clear_cameras())
        self.l6_poses_info = ViewerMarkdown(
            "poses info", "Green: localized, blue: ground truth, red: ground truth of a failed query."
        )
        self.m1_show_virtual_views = ViewerCheckbox(
            "Show virtual views",
            False,
            cb_hook=lambda element: self.set_virtual_views_visible(element.value),
            hint="purple: the poses no camera took that the map index rendered (what the map can also recognise)",
        )

    def get_model(self) -> nn.Module:
        """The model these tools belong to (a method, not a property: the viewer walks public attributes)."""
        return self._model[0]

    @property
    def projection(self) -> Optional[PCAProjection]:
        """The PCA projection in use (None until the first frame is rendered)."""
        return self._projection

    @property
    def reference(self) -> Optional[Tensor]:
        """The reference descriptor of the similarity map (None until picked)."""
        return self._reference

    @property
    def markers(self) -> List[CameraMarker]:
        """The localized cameras drawn now."""
        return list(self._markers)

    def _viewer(self):
        """The nerfstudio Viewer these tools are installed in, or None outside the viewer."""
        return getattr(self.control, "viewer", None)

    def _rerender(self) -> None:
        viewer = self._viewer()
        if viewer is not None:
            viewer._trigger_rerender()

    # ------------------------------------------------------------------ per-frame outputs

    @torch.no_grad()
    def image_outputs(self, outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """``descriptor_pca`` and ``descriptor_similarity`` (H, W, 3) for a rendered frame's outputs."""
        descriptors = outputs.get("descriptor")
        if descriptors is None:
            return {}
        accumulation = outputs.get("accumulation")
        if self._projection is None or self._refit_pca:
            mask = None if accumulation is None else accumulation[..., 0] > MIN_ACCUMULATION
            self._projection = fit_pca(descriptors, mask)
            self._refit_pca = False
            self.d4_descriptor_info.content = (
                f"PCA fitted on a {descriptors.shape[1]}x{descriptors.shape[0]} frame; it stays until "
                "**Refresh descriptor PCA**."
            )
        if self._reference is None:
            similarity = torch.full_like(descriptors[..., :1], -1.0)
        else:
            similarity = cosine_similarity_map(descriptors, self._reference)
        heatmap = similarity_heatmap(similarity, float(self.d3_similarity_floor.value), background=outputs.get("rgb"))
        return {"descriptor_pca": apply_pca(descriptors, self._projection), "descriptor_similarity": heatmap}

    def request_pca_refit(self) -> None:
        """Fit the PCA again on the next rendered frame (the current view), then keep it."""
        self._refit_pca = True
        self.d4_descriptor_info.content = "PCA will be fitted on the next frame."

    # ------------------------------------------------------------------ similarity reference

    def set_reference(self, descriptor: Tensor, point: Optional[np.ndarray] = None) -> None:
        """Use ``descriptor`` (D,) as the similarity reference; ``point`` (normalised frame) is marked in the scene."""
        self._reference = torch.nn.functional.normalize(descriptor.detach().float().reshape(-1), dim=0)
        self._reference_point = None if point is None else np.asarray(point, dtype=np.float64).reshape(3)
        where = "" if point is None else " at ({:.2f}, {:.2f}, {:.2f})".format(*self._reference_point)
        self.d4_descriptor_info.content = f"Reference picked{where}: see the **descriptor_similarity** output."
        viewer = self._viewer()
        if viewer is not None and self._reference_point is not None:
            self._handles["reference"] = viewer.viser_server.scene.add_icosphere(
                f"{SCENE_ROOT}/similarity_reference",
                radius=0.1,
                color=(255, 0, 255),
                position=tuple(self._reference_point * VISER_SCALE),
            )

    @torch.no_grad()
    def descriptor_along_ray(
        self, origin: Tuple[float, float, float], direction: Tuple[float, float, float]
    ) -> Optional[Tuple[Tensor, np.ndarray]]:
        """(descriptor, surface point) seen along a ray of the normalised frame; None when it sees empty space."""
        model = self.get_model()
        device = model.device
        origins = torch.tensor([origin], dtype=torch.float32, device=device)
        directions = torch.nn.functional.normalize(
            torch.tensor([direction], dtype=torch.float32, device=device), dim=-1
        )
        bundle = RayBundle(
            origins=origins,
            directions=directions,
            pixel_area=torch.full((1, 1), 1e-6, device=device),
            camera_indices=torch.zeros((1, 1), dtype=torch.long, device=device),
            metadata={"directions_norm": torch.ones((1, 1), device=device)},
        )
        was_training = model.training
        model.eval()
        try:
            outputs = model(bundle)
        finally:
            if was_training:
                model.train()
        if float(outputs["accumulation"][0, 0]) < MIN_ACCUMULATION:
            return None
        point = (origins + directions * outputs["depth"])[0].cpu().numpy().astype(np.float64)
        return outputs["descriptor"][0], point

    def start_picking_reference(self) -> None:
        """Make the next click in the scene pick the reference descriptor."""
        if self._viewer() is None:
            CONSOLE.print("[yellow]crossfire viewer: picking a reference needs the viewer.")
            return
        self.control.register_pointer_cb("click", self._on_click)
        self.d4_descriptor_info.content = "Click a point in the scene to use its descriptor as the reference."

    def _on_click(self, click: ViewerClick) -> None:
        viewer = self._viewer()
        lock = viewer.train_lock if viewer is not None and viewer.train_lock is not None else contextlib.nullcontext()
        try:
            with lock:
                picked = self.descriptor_along_ray(click.origin, click.direction)
        finally:
            with contextlib.suppress(Exception):
                self.control.unregister_pointer_cb()
        if picked is None:
            self.d4_descriptor_info.content = "That click sees empty space; press **Pick similarity reference** again."
            return
        self.set_reference(*picked)
        self._rerender()

    # ------------------------------------------------------------------ localized cameras

    def load_from_gui(self) -> None:
        poses = self.l1_poses_file.value.strip()
        if not poses:
            self.l6_poses_info.content = "Type the path of a poses.json written by ns-localize first."
            return
        query_dir = self.l2_query_dir.value.strip() or None
        self.load_localized_cameras(Path(poses).expanduser(), None if query_dir is None else Path(query_dir))

    def load_localized_cameras(self, poses_path: Path, query_dir: Optional[Path] = None) -> List[CameraMarker]:
        """Draw the cameras of a poses.json (with thumbnails and ground truth from ``query_dir`` when given).

        Without ``query_dir``, a ``query_dir`` entry in the file's ``metadata`` is used when it exists. Problems are
        reported in the panel and on the console, never raised.
        """
        viewer = self._viewer()
        if viewer is None:
            CONSOLE.print("[yellow]crossfire viewer: drawing localized cameras needs the viewer.")
            return []
        notes: List[str] = []
        try:
            if query_dir is None:
                query_dir = metadata_query_dir(poses_path)
            queries = {}
            if query_dir is not None:
                try:
                    queries = {q.file_path: q for q in load_query_set(query_dir)[0]}
                except QueryInputError as err:
                    notes.append(f"no thumbnails or ground truth: {err}")
            transform, scale = frame_normalization(viewer.pipeline)
            markers = localized_cameras(poses_path, transform, scale, queries, _training_camera_shape(viewer.pipeline))
        except (OSError, ValueError, KeyError, TypeError) as err:
            message = f"cannot read {poses_path}: {err}"
            self.l6_poses_info.content = message
            CONSOLE.print(f"[red]crossfire viewer: {message}")
            return []
        self.clear_cameras()
        self._draw(viewer, markers)
        estimates = sum(m.kind == "estimate" for m in markers)
        truths = sum(m.kind == "ground_truth" for m in markers)
        statuses = Counter({m.file_path: m.status for m in markers}.values())
        counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        summary = (
            f"{estimates} estimates, {truths} ground truths from {poses_path.name} ({counts or 'nothing to draw'})."
        )
        self.l6_poses_info.content = " ".join([summary] + notes)
        CONSOLE.print(f"crossfire viewer: {summary}" + "".join(f"\n  {n}" for n in notes))
        return markers

    def _draw(self, viewer, markers: List[CameraMarker]) -> None:
        server = viewer.viser_server
        scale = frustum_scale(np.stack([m.c2w[:3, 3] for m in markers])) if markers else 0.1
        show_truth = bool(self.l4_show_ground_truth.value)
        for index, marker in enumerate(markers):
            wxyz, position = viser_pose(marker.c2w, VISER_SCALE)
            image = None if marker.image_path is None else load_thumbnail(marker.image_path)
            handle = server.scene.add_camera_frustum(
                f"{SCENE_ROOT}/localized/{marker.kind}_{index:04d}",
                fov=marker.fov_y,
                aspect=marker.aspect,
                scale=scale,
                color=marker.color,
                image=image,
                wxyz=wxyz,
                position=position,
                visible=marker.kind == "estimate" or show_truth,
            )
            handle.on_click(_move_camera_to)
            self._handles[f"{marker.kind}_{index:04d}"] = handle
        for index, (_, estimate, truth) in enumerate(error_segments(markers)):
            self._handles[f"error_{index:04d}"] = server.scene.add_spline_catmull_rom(
                f"{SCENE_ROOT}/localized/error_{index:04d}",
                positions=np.stack([estimate, truth]) * VISER_SCALE,
                color=(255, 200, 0),
                line_width=2.0,
                visible=show_truth,
            )
        self._markers = list(markers)

    def set_ground_truth_visible(self, visible: bool) -> None:
        for name, handle in self._handles.items():
            if name.startswith(("ground_truth_", "error_")):
                handle.visible = visible

    def set_virtual_views_visible(self, visible: bool) -> int:
        """Show (drawn once, from the map index beside the map's config.yml) or hide the virtual views; returns how
        many are drawn."""
        viewer = self._viewer()
        names = [n for n in self._handles if n.startswith("virtual_")]
        if not visible or names:
            for name in names:
                self._handles[name].visible = visible
            return len(names)
        if viewer is None:
            CONSOLE.print("[yellow]crossfire viewer: drawing virtual views needs the viewer.")
            return 0
        path = Path(viewer.log_filename).parent / INDEX_FILE
        try:
            markers = virtual_view_markers(path)
        except (OSError, ValueError) as err:
            CONSOLE.print(f"[yellow]crossfire viewer: no virtual views to show ({err}); ns-localize builds the index.")
            return 0
        server = viewer.viser_server
        scale = 0.5 * frustum_scale(np.stack([m.c2w[:3, 3] for m in markers])) if markers else 0.1
        for index, marker in enumerate(markers):
            wxyz, position = viser_pose(marker.c2w, VISER_SCALE)
            handle = server.scene.add_camera_frustum(
                f"{SCENE_ROOT}/virtual/{index:04d}", fov=marker.fov_y, aspect=marker.aspect, scale=scale,
                color=marker.color, wxyz=wxyz, position=position,
            )  # fmt: skip
            self._handles[f"virtual_{index:04d}"] = handle
        CONSOLE.print(f"crossfire viewer: {len(markers)} virtual views from {path}")
        return len(markers)

    def clear_cameras(self) -> None:
        """Remove the localized cameras (the similarity reference marker and the virtual views stay)."""
        for name in [n for n in self._handles if n != "reference" and not n.startswith("virtual_")]:
            with contextlib.suppress(Exception):
                self._handles.pop(name).remove()
        self._markers = []


def frustum_scale(centres: np.ndarray, fraction: float = 0.08, minimum: float = 0.1) -> float:
    """Frustum size in viser units: ``fraction`` of the cameras' median distance from their middle, so that they
    are visible whatever the scene's scale (nerfstudio's fixed 0.1 is a few pixels on a scene seen whole)."""
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    spread = float(np.median(np.linalg.norm(centres - centres.mean(axis=0), axis=1)))
    return max(minimum, fraction * spread * VISER_SCALE)


def _move_camera_to(event) -> None:
    """Clicking a frustum moves the viewer's camera there (as for nerfstudio's training cameras)."""
    with event.client.atomic():
        event.client.camera.position = event.target.position
        event.client.camera.wxyz = event.target.wxyz


def metadata_query_dir(poses_path: Path) -> Optional[Path]:
    """``metadata.query_dir`` of a poses.json, when it names an existing folder."""
    data = json.loads(Path(poses_path).read_text(encoding="utf-8"))
    value = (data.get("metadata") or {}).get("query_dir") if isinstance(data, dict) else None
    return Path(value) if isinstance(value, str) and Path(value).is_dir() else None


def _training_camera_shape(pipeline) -> Tuple[float, float]:
    """(vertical fov, aspect) of the first training camera: the default for frames without intrinsics."""
    cameras = pipeline.datamanager.train_dataset.cameras
    height, width, fy = float(cameras.height[0]), float(cameras.width[0]), float(cameras.fy[0])
    return 2.0 * math.atan(height / (2.0 * fy)), width / height
