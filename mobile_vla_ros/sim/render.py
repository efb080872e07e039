"""First-person camera of the simulated robot, drawn with a pinhole model and OpenCV.

The scene is deliberately plain and high-contrast so a small policy can read it after the
frame is squashed to 224x224 (or smaller): a grey floor with a grid (forward motion shows as
lines sweeping past), beige walls with vertical stripes, a red box and a green bottle with a
white label. Where the box sits left or right of centre and how big it and the bottle appear
tell the policy where it is; nothing else in the picture changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mobile_vla_ros.sim.world import Layout, RoomConfig

# RGB colours.
CEILING = (228, 228, 232)
FLOOR = (96, 96, 100)
GRID = (150, 150, 156)
WALL_FRONT = (196, 184, 160)
WALL_SIDE = (176, 164, 140)
WALL_STRIPE = (130, 120, 100)
BOX_FRONT = (220, 40, 30)
BOX_SIDE = (160, 25, 20)
BOX_TOP = (245, 110, 95)
BOTTLE_BODY = (20, 190, 60)
BOTTLE_LABEL = (250, 250, 250)
BOTTLE_CAP = (20, 60, 200)

# Scenes the demonstrations never show, for the familiarity monitor (sim_node `scene`): the same
# room and layouts, seen darker or in other colours (the red box turns blue, the grey floor bluish).
SCENES = {
    "plain": lambda image: image,
    "dark": lambda image: (image.astype(np.uint16) * 2 // 5).astype(np.uint8),
    "recoloured": lambda image: np.ascontiguousarray(image[..., [2, 0, 1]]),
}

_SHIFT = 4  # sub-pixel bits for OpenCV drawing, so slow motion still moves edges smoothly
_SCALE = 1 << _SHIFT
GRID_STEP_M = 0.5


@dataclass(frozen=True)
class CameraConfig:
    width: int = 640
    height: int = 480
    hfov_deg: float = 100.0
    mount_height: float = 0.35  # metres above the floor
    pitch_down_deg: float = 8.0
    near: float = 0.05

    @property
    def focal(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)


class Renderer:
    """Renders the room for one camera configuration; static geometry is built once."""

    def __init__(self, room: RoomConfig = RoomConfig(), camera: CameraConfig = CameraConfig()):
        self.room, self.camera = room, camera
        pitch = math.radians(camera.pitch_down_deg)
        self._cos, self._sin = math.cos(pitch), math.sin(pitch)
        self._focal = camera.focal
        self._cx, self._cy = camera.width / 2, camera.height / 2
        horizon = int(round(self._cy - self._focal * math.tan(pitch)))
        self._background = np.empty((camera.height, camera.width, 3), np.uint8)
        self._background[: max(horizon, 0)] = CEILING
        self._background[max(horizon, 0) :] = FLOOR
        self._walls, self._grid = self._static_geometry()

    def _static_geometry(self):
        length, half, top = self.room.length, self.room.width / 2, self.room.wall_height
        # The wall behind the start (x = 0) is never in view: the robot always faces +x.
        walls = [
            (np.array([[length, -half, 0], [length, half, 0], [length, half, top], [length, -half, top]]), WALL_FRONT),
            (np.array([[0, half, 0], [length, half, 0], [length, half, top], [0, half, top]]), WALL_SIDE),
            (np.array([[0, -half, 0], [length, -half, 0], [length, -half, top], [0, -half, top]]), WALL_SIDE),
        ]
        lines = []
        for x in np.arange(GRID_STEP_M, length, GRID_STEP_M):
            lines.append(((x, -half, 0), (x, half, 0), GRID))
            for y in (-half, half):
                lines.append(((x, y, 0), (x, y, top), WALL_STRIPE))
        for y in np.arange(-half + GRID_STEP_M, half - 1e-6, GRID_STEP_M):
            lines.append(((0, y, 0), (length, y, 0), GRID))
        starts = np.array([line[0] for line in lines], dtype=np.float64)
        ends = np.array([line[1] for line in lines], dtype=np.float64)
        colours = [line[2] for line in lines]
        return walls, (starts, ends, colours)

    # -- projection ---------------------------------------------------------------------------
    def _to_camera(self, points: np.ndarray, x: float, y: float) -> np.ndarray:
        """World points (N, 3) -> camera coordinates (N, 3): right, down, forward."""
        dx = points[..., 0] - x
        dy = points[..., 1] - y
        dz = points[..., 2] - self.camera.mount_height
        forward = dx * self._cos - dz * self._sin
        down = -dx * self._sin - dz * self._cos
        return np.stack([-dy, down, forward], axis=-1)

    def _project(self, camera_points: np.ndarray) -> np.ndarray:
        """Camera points in front of the near plane -> fixed-point pixel coordinates (N, 2)."""
        depth = camera_points[..., 2]
        u = self._cx + self._focal * camera_points[..., 0] / depth
        v = self._cy + self._focal * camera_points[..., 1] / depth
        return np.round(np.stack([u, v], axis=-1) * _SCALE).astype(np.int32)

    def _clip_polygon(self, polygon: np.ndarray) -> np.ndarray:
        """Sutherland-Hodgman clip of a convex camera-space polygon against the near plane."""
        near, kept = self.camera.near, []
        count = len(polygon)
        for index in range(count):
            current, following = polygon[index], polygon[(index + 1) % count]
            current_in, following_in = current[2] >= near, following[2] >= near
            if current_in:
                kept.append(current)
            if current_in != following_in:
                t = (near - current[2]) / (following[2] - current[2])
                kept.append(current + t * (following - current))
        return np.array(kept)

    def _fill(self, image: np.ndarray, world_polygon: np.ndarray, colour, x: float, y: float) -> None:
        clipped = self._clip_polygon(self._to_camera(world_polygon, x, y))
        if len(clipped) >= 3:
            cv2.fillConvexPoly(image, self._project(clipped), colour, cv2.LINE_AA, _SHIFT)

    def _draw_lines(self, image: np.ndarray, x: float, y: float) -> None:
        starts_world, ends_world, colours = self._grid
        starts, ends = self._to_camera(starts_world, x, y), self._to_camera(ends_world, x, y)
        near = self.camera.near
        start_in, end_in = starts[:, 2] >= near, ends[:, 2] >= near
        visible = start_in | end_in
        # Move the endpoint that is behind the camera onto the near plane.
        t = np.clip((near - starts[:, 2]) / np.where(ends[:, 2] != starts[:, 2], ends[:, 2] - starts[:, 2], 1.0), 0, 1)
        crossing = starts + t[:, None] * (ends - starts)
        starts = np.where(start_in[:, None], starts, crossing)
        ends = np.where(end_in[:, None], ends, crossing)
        indices = np.flatnonzero(visible)
        pixel_starts, pixel_ends = self._project(starts[indices]).tolist(), self._project(ends[indices]).tolist()
        for index, a, b in zip(indices, pixel_starts, pixel_ends):
            cv2.line(image, a, b, colours[index], 2, cv2.LINE_AA, _SHIFT)

    # -- objects ------------------------------------------------------------------------------
    def _draw_box(self, image: np.ndarray, layout: Layout, x: float, y: float) -> None:
        (bx, by), (hx, hy), top = layout.box_center, layout.box_half_size, self.room.box_height
        x0, x1, y0, y1 = bx - hx, bx + hx, by - hy, by + hy
        eye_z = self.camera.mount_height
        faces = []
        if x < x0:  # only faces turned towards the camera are drawn (the box is convex)
            faces.append(([[x0, y0, 0], [x0, y1, 0], [x0, y1, top], [x0, y0, top]], BOX_FRONT))
        if x > x1:
            faces.append(([[x1, y0, 0], [x1, y1, 0], [x1, y1, top], [x1, y0, top]], BOX_FRONT))
        if y > y1:
            faces.append(([[x0, y1, 0], [x1, y1, 0], [x1, y1, top], [x0, y1, top]], BOX_SIDE))
        if y < y0:
            faces.append(([[x0, y0, 0], [x1, y0, 0], [x1, y0, top], [x0, y0, top]], BOX_SIDE))
        if eye_z > top:
            faces.append(([[x0, y0, top], [x1, y0, top], [x1, y1, top], [x0, y1, top]], BOX_TOP))
        for corners, colour in faces:
            self._fill(image, np.array(corners, dtype=np.float64), colour, x, y)

    def _draw_bottle(self, image: np.ndarray, layout: Layout, x: float, y: float) -> None:
        """A vertical bottle drawn as a camera-facing silhouette: body, white label, neck, cap."""
        tx, ty = layout.target
        radius, height = self.room.bottle_radius, self.room.bottle_height
        distance = math.hypot(tx - x, ty - y)
        # Unit vector across the line of sight, in the floor plane.
        across = np.array([-(ty - y), tx - x, 0.0]) / max(distance, 1e-6)
        centre = np.array([tx, ty, 0.0])

        def band(half_width: float, z0: float, z1: float) -> np.ndarray:
            side = across * half_width
            return np.array(
                [
                    centre - side + [0, 0, z0],
                    centre + side + [0, 0, z0],
                    centre + side + [0, 0, z1],
                    centre - side + [0, 0, z1],
                ]
            )

        self._fill(image, band(radius, 0.0, 0.68 * height), BOTTLE_BODY, x, y)
        self._fill(image, band(radius, 0.25 * height, 0.5 * height), BOTTLE_LABEL, x, y)
        self._fill(image, band(0.45 * radius, 0.68 * height, 0.9 * height), BOTTLE_BODY, x, y)
        self._fill(image, band(0.5 * radius, 0.9 * height, height), BOTTLE_CAP, x, y)

    def render(self, layout: Layout, x: float, y: float) -> np.ndarray:
        """RGB uint8 (height, width, 3) view from a robot at (x, y) facing +x."""
        image = self._background.copy()
        for polygon, colour in self._walls:
            self._fill(image, polygon.astype(np.float64), colour, x, y)
        self._draw_lines(image, x, y)
        eye = np.array([x, y])
        objects = [
            (float(np.hypot(*(np.array(layout.box_center) - eye))), self._draw_box),
            (float(np.hypot(*(np.array(layout.target) - eye))), self._draw_bottle),
        ]
        for _, draw in sorted(objects, key=lambda item: -item[0]):  # far first
            draw(image, layout, x, y)
        return image
