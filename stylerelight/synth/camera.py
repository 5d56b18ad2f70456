"""Pinhole cameras orbiting the head.

Angles in degrees. yaw > 0 moves the camera towards +x, the subject's left, so the image shows
more of the subject's LEFT cheek (and the nose points towards the image's left); pitch > 0
moves the camera up, looking down at the face.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

TARGET = np.array([0.0, -0.15, 0.0])  # the point cameras look at: about the face's centre


@dataclass
class Camera:
    yaw: float = 0.0
    pitch: float = 0.0
    distance: float = 6.0
    fov: float = 26.0  # vertical = horizontal field of view (square images), degrees

    def origin(self) -> np.ndarray:
        y, p = math.radians(self.yaw), math.radians(self.pitch)
        d = np.array([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])
        return TARGET + self.distance * d

    def world_to_camera(self) -> np.ndarray:
        """4x4: camera looks along -z_cam, x_cam right, y_cam up (OpenGL style)."""
        o = self.origin()
        f = TARGET - o
        f /= np.linalg.norm(f)
        r = np.cross(f, [0.0, 1.0, 0.0])
        r /= np.linalg.norm(r)
        u = np.cross(r, f)
        m = np.eye(4)
        m[0, :3], m[1, :3], m[2, :3] = r, u, -f
        m[:3, 3] = -m[:3, :3] @ o
        return m

    def intrinsics(self, resolution: int) -> np.ndarray:
        fpx = 0.5 * resolution / math.tan(math.radians(self.fov) / 2)
        return np.array([[fpx, 0, resolution / 2], [0, fpx, resolution / 2], [0, 0, 1.0]])

    def project(self, points: np.ndarray, resolution: int) -> np.ndarray:
        """World points [N, 3] -> pixel coordinates [N, 2] (x right, y down; pixel centres at +0.5)."""
        m = self.world_to_camera()
        pc = points @ m[:3, :3].T + m[:3, 3]
        k = self.intrinsics(resolution)
        x = k[0, 0] * pc[:, 0] / -pc[:, 2] + k[0, 2]
        y = -k[1, 1] * pc[:, 1] / -pc[:, 2] + k[1, 2]
        return np.stack([x, y], -1)

    def to_json(self, resolution: int | None = None) -> dict:
        d = asdict(self)
        if resolution:
            d["intrinsics"] = self.intrinsics(resolution).tolist()
            d["world_to_camera"] = self.world_to_camera().tolist()
        return d


def default_rig() -> list[Camera]:
    """8 cameras: yaw -45..45 in four steps at two pitches (0 and 15 degrees)."""
    return [Camera(yaw=y, pitch=p) for p in (0.0, 15.0) for y in (-45.0, -15.0, 15.0, 45.0)]
