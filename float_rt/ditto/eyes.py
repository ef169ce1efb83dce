"""The source photo's eye measures, which the LMDM is conditioned on, from MediaPipe's models.

Ditto conditions its motion on how open the source's eyes are and where its irises sit. The official
code measures both on its 512-px crop of the photo with MediaPipe's face detector (BlazeFace, short range, 128 px)
and face mesh (478 landmarks with the irises, 256 px), which Ditto's release publishes as ONNX files
(``ditto_onnx/blaze_face.onnx``, ``ditto_onnx/face_mesh.onnx``; MediaPipe's models, Apache-2.0). We run
the same two files through onnxruntime:

1. detector: the crop resized to 128 x 128, scaled to [-1, 1]; 896 SSD anchors (strides 8, 16, 16, 16;
   2 and 6 per cell, unit size) decode the 16 regressors of each (box centre and size, 6 keypoints)
   and a sigmoid score; scores below 0.5 are dropped and overlapping boxes (IoU above 0.3) are blended,
   weighted by score (BlazeFace's "weighted" suppression); the best face is kept;
2. region: a square 1.5 times the box's longer side around its centre, turned by the angle of the line
   through the two eye keypoints, resampled to 256 x 256 (bilinear), scaled to [0, 1];
3. mesh: 478 (x, y, z) points in the 256-px region, mapped back to the crop and divided by its size;
4. measures (per eye, left then right, on the 3-D points): ``open`` = the three eyelid gaps over the eye
   width; ``ball`` = ``(unit(iris - centre) - unit(outer - inner)) * |iris - centre|`` (the iris offset
   from the eye's centre, its direction relative to the eye's outward one), as (x_L, x_R, y_L, y_R,
   z_L, z_R).

No face found: ``None`` (the caller keeps the neutral values and says so).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DETECTOR_FILE = "ditto_onnx/blaze_face.onnx"
MESH_FILE = "ditto_onnx/face_mesh.onnx"
FILES = (DETECTOR_FILE, MESH_FILE)       # relative to the repo's root (beside ditto_pytorch/)

DETECTOR_SIZE = 128
MESH_SIZE = 256
MESH_POINTS = 478
MIN_SCORE = 0.5
MAX_OVERLAP = 0.3
REGION_SCALE = 1.5

# MediaPipe mesh indices: per eye, the corners (outer, inner), three (lower, upper) eyelid pairs, the iris
LEFT = {"corners": (33, 133), "lids": ((145, 159), (144, 160), (153, 158)), "iris": 468}
RIGHT = {"corners": (263, 362), "lids": ((374, 386), (373, 387), (380, 385)), "iris": 473}


# ---- detector -------------------------------------------------------------------------------------------------

def anchors() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1] of the short-range detector: a 16 x 16 grid (stride 8) with 2
    anchors a cell, then an 8 x 8 grid (three layers of stride 16 merged) with 6; all of unit size."""
    out = []
    for grid, per_cell in ((DETECTOR_SIZE // 8, 2), (DETECTOR_SIZE // 16, 6)):
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out)


ANCHORS = anchors()


def decode(regressors: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """(896, 16) regressors, (896,) logits -> (n, 17) detections above ``MIN_SCORE``: box (x0, y0, x1,
    y1) in detector pixels, 6 keypoints (x, y) in [0, 1], score."""
    r = regressors.astype(np.float64) / DETECTOR_SIZE
    centre = r[:, :2] + ANCHORS
    half = r[:, 2:4] / 2
    box = np.concatenate([centre - half, centre + half], 1) * DETECTOR_SIZE
    keypoints = r[:, 4:16].reshape(-1, 6, 2) + ANCHORS[:, None]
    score = 1 / (1 + np.exp(-np.clip(logits.astype(np.float64), -50, 100)))
    dets = np.concatenate([box, keypoints.reshape(-1, 12), score[:, None]], 1)
    return dets[score >= MIN_SCORE]


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], others[:, :2])
    hi = np.minimum(box[2:4], others[:, 2:4])
    inter = np.clip(hi - lo, 0, None).prod(1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area(box) + area(others) - inter)


def blend_overlaps(dets: np.ndarray) -> list[np.ndarray]:
    """Weighted suppression: the best remaining detection takes every one overlapping it by more than
    ``MAX_OVERLAP`` (itself included); the group's boxes and keypoints are averaged weighted by score,
    its score is their mean.  Best group first."""
    order = np.argsort(dets[:, 16])[::-1]
    faces = []
    while len(order):
        with np.errstate(invalid="ignore", divide="ignore"):      # degenerate boxes overlap nothing
            overlapping = iou(dets[order[0], :4], dets[order, :4]) > MAX_OVERLAP
        overlapping[0] = True
        group = order[overlapping]
        order = order[~np.isin(order, group)]
        face = dets[group[0]].copy()
        if len(group) > 1:
            w = dets[group, 16:17]
            face[:16] = (dets[group, :16] * w).sum(0) / w.sum()
            face[16] = w.mean()
        faces.append(face)
    return faces


# ---- region and mesh ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """A square of the image, turned by ``angle`` (radians) about its centre."""
    cx: float
    cy: float
    side: float
    angle: float

    @classmethod
    def around(cls, face: np.ndarray, image_size: int) -> "Region":
        """The mesh's region for a detection on a square image of ``image_size`` pixels."""
        k = image_size / DETECTOR_SIZE
        x0, y0, x1, y1 = face[:4] * k
        (ax, ay), (bx, by) = face[4:6], face[6:8]          # the two eye keypoints, in [0, 1]
        angle = -np.arctan2(ay - by, bx - ax)
        angle -= 2 * np.pi * np.floor((angle + np.pi) / (2 * np.pi))    # into [-pi, pi)
        return cls((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * REGION_SCALE, float(angle))

    def corners(self) -> np.ndarray:
        """(4, 2) image points that map to the mesh input's corners (top-left, top-right, bottom-right,
        bottom-left)."""
        h = self.side / 2
        square = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
        c, s = np.cos(self.angle), np.sin(self.angle)
        return square @ np.array([[c, s], [-s, c]]) + (self.cx, self.cy)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) mesh points in region pixels (``MESH_SIZE``) -> image pixels (z scaled as x)."""
        p = points.astype(np.float64) / MESH_SIZE
        u, v = p[:, 0] - 0.5, p[:, 1] - 0.5
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.stack([(u * c - v * s) * self.side + self.cx, (u * s + v * c) * self.side + self.cy,
                         p[:, 2] * self.side], 1)


def cut_region(image: np.ndarray, region: Region) -> np.ndarray:
    import cv2
    target = np.array([[0, 0], [MESH_SIZE, 0], [MESH_SIZE, MESH_SIZE], [0, MESH_SIZE]], np.float32)
    m = cv2.getPerspectiveTransform(region.corners().astype(np.float32), target)
    return cv2.warpPerspective(image, m, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR)


# ---- the measures ---------------------------------------------------------------------------------------------

def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-8)


def eye_measures(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(478, 3) mesh points (image coordinates over the image size) -> (eye_open (2,), eye_ball (6,))."""
    opens, balls = [], []
    for eye in (LEFT, RIGHT):
        outer, inner = points[eye["corners"][0]], points[eye["corners"][1]]
        width = np.linalg.norm(outer - inner)
        gaps = sum(np.linalg.norm(points[a] - points[b]) for a, b in eye["lids"])
        opens.append(gaps / (width + 1e-8))
        centre = (outer + inner) / 2
        offset = points[eye["iris"]] - centre
        balls.append((_unit(offset) - _unit(outer - inner)) * np.linalg.norm(offset))
    return np.array(opens, np.float32), np.stack(balls, -1).reshape(6).astype(np.float32)


class EyeMeasurer:
    """The two ONNX sessions; ``measure(crop)`` -> (eye_open, eye_ball), or None without a face."""

    def __init__(self, detector: str | Path, mesh: str | Path):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1      # once per photo: not worth the engine's cores
        self.detector = ort.InferenceSession(str(detector), opts, providers=["CPUExecutionProvider"])
        self.mesh = ort.InferenceSession(str(mesh), opts, providers=["CPUExecutionProvider"])

    @classmethod
    def from_folder(cls, repo_root: Path) -> "EyeMeasurer | None":
        paths = [repo_root / f for f in FILES]
        return cls(*paths) if all(p.is_file() for p in paths) else None

    def face(self, image: np.ndarray) -> np.ndarray | None:
        import cv2
        small = cv2.resize(image, (DETECTOR_SIZE, DETECTOR_SIZE)).astype(np.float32) / 127.5 - 1.0
        regressors, logits = self.detector.run(None, {self.detector.get_inputs()[0].name: small[None]})[:2]
        faces = blend_overlaps(decode(regressors.reshape(-1, 16), logits.reshape(-1)))
        return faces[0] if faces else None

    def landmarks(self, image: np.ndarray, region: Region) -> np.ndarray:
        patch = cut_region(image, region).astype(np.float32) / 255.0
        out = self.mesh.run(None, {self.mesh.get_inputs()[0].name: patch[None]})[0]
        return region.to_image(out.reshape(MESH_POINTS, 3)) / image.shape[1]

    def measure(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """RGB uint8 square crop -> its eye measures, or None where the detector finds no face."""
        face = self.face(crop)
        if face is None:
            return None
        return eye_measures(self.landmarks(crop, Region.around(face, crop.shape[1])))
