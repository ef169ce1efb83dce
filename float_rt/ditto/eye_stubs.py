"""Stand-ins for MediaPipe's two ONNX files (``ditto_onnx/blaze_face.onnx``, ``face_mesh.onnx``) with
their interfaces, for demo folders and tests: no weights of theirs exist here.

- detector: ``input`` (1, 128, 128, 3) -> ``regressors`` (1, 896, 16), ``classificators`` (1, 896, 1).
  One face, centred, upright, at two overlapping anchors (the suppression blends them); its logit
  grows with the image's contrast, so a flat image (a blank photo) has no face.
- mesh: ``input`` (1, 256, 256, 3) -> ``Identity`` (1, 1, 1, 1434), ``Identity_1``, ``Identity_2``
  (1, 1, 1, 1): a fixed 478-point layout whose eyes are open and look ahead, moved by the image's
  mean brightness.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .eyes import ANCHORS, DETECTOR_FILE, DETECTOR_SIZE, LEFT, MESH_FILE, MESH_POINTS, MESH_SIZE, RIGHT

FACE_ANCHORS = (674, 675)        # the 8 x 8 grid's cell (3, 3): near the centre


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def detector_outputs() -> tuple[np.ndarray, np.ndarray]:
    """The stand-in's regressors (896, 16) and base logits (896,): a face of 56 px around (64, 60)."""
    regressors = np.zeros((len(ANCHORS), 16), np.float32)
    logits = np.full(len(ANCHORS), -1000.0, np.float32)
    for shift, k in enumerate(FACE_ANCHORS):
        centre = np.array([64.0 + 2 * shift, 60.0])
        eyes = np.array([[0.40, 0.42], [0.60, 0.42]]) * DETECTOR_SIZE
        rest = np.array([[0.5, 0.55], [0.5, 0.65], [0.3, 0.45], [0.7, 0.45]]) * DETECTOR_SIZE
        anchor = ANCHORS[k] * DETECTOR_SIZE
        regressors[k, :2] = centre - anchor
        regressors[k, 2:4] = 56.0
        regressors[k, 4:] = (np.concatenate([eyes, rest]) + 2 * shift - anchor).reshape(-1)
        logits[k] = 1.0
    return regressors, logits


def mesh_template() -> np.ndarray:
    """(478, 3) points in the 256-px region: a spread of points, with both eyes drawn in (corners,
    three eyelid pairs 12 px apart, the iris in the middle)."""
    gen = np.random.default_rng(0)
    points = np.concatenate([gen.uniform(40, 216, (MESH_POINTS, 2)), gen.uniform(-10, 10, (MESH_POINTS, 1))], 1)
    for eye, (x_outer, x_inner) in ((LEFT, (86.0, 116.0)), (RIGHT, (170.0, 140.0))):
        outer, inner = eye["corners"]
        points[outer] = (x_outer, 104.0, 0.0)
        points[inner] = (x_inner, 104.0, 0.0)
        for i, (lower, upper) in enumerate(eye["lids"]):
            x = x_outer + (x_inner - x_outer) * (i + 1) / 4
            points[lower] = (x, 110.0, 0.0)
            points[upper] = (x, 98.0, 0.0)
        points[eye["iris"]] = ((x_outer + x_inner) / 2, 104.0, 0.0)
    return points.astype(np.float32)


def write_detector_stub(path: str | Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper
    regressors, logits = detector_outputs()
    inits = [numpy_helper.from_array(regressors[None], "base_regressors"),
             numpy_helper.from_array(logits.reshape(1, -1, 1), "base_logits"),
             numpy_helper.from_array(np.array(50.0, np.float32), "gain"),
             numpy_helper.from_array(np.array(0.05, np.float32), "flat")]
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["input", "input"], ["square"]),
             helper.make_node("ReduceMean", ["square"], ["mean_square"], keepdims=0),
             helper.make_node("Mul", ["mean", "mean"], ["mean2"]),
             helper.make_node("Sub", ["mean_square", "mean2"], ["variance"]),
             helper.make_node("Relu", ["variance"], ["variance_pos"]),
             helper.make_node("Sqrt", ["variance_pos"], ["contrast"]),
             helper.make_node("Sub", ["contrast", "flat"], ["above"]),
             helper.make_node("Mul", ["above", "gain"], ["lift"]),
             helper.make_node("Add", ["base_logits", "lift"], ["classificators"]),
             helper.make_node("Identity", ["base_regressors"], ["regressors"])]
    graph = helper.make_graph(
        nodes, "blaze_face_stub",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, DETECTOR_SIZE, DETECTOR_SIZE, 3])],
        [helper.make_tensor_value_info("regressors", TensorProto.FLOAT, [1, len(ANCHORS), 16]),
         helper.make_tensor_value_info("classificators", TensorProto.FLOAT, [1, len(ANCHORS), 1])], inits)
    return _save(graph, Path(path))


def write_mesh_stub(path: str | Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(mesh_template().reshape(1, 1, 1, -1), "template"),
             numpy_helper.from_array(np.array(8.0, np.float32), "gain"),
             numpy_helper.from_array(np.array(0.5, np.float32), "grey"),
             numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "one")]
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
             helper.make_node("Sub", ["mean", "grey"], ["offset"]),
             helper.make_node("Mul", ["offset", "gain"], ["shift"]),
             helper.make_node("Add", ["template", "shift"], ["Identity"]),
             helper.make_node("Identity", ["one"], ["Identity_1"]),
             helper.make_node("Identity", ["one"], ["Identity_2"])]
    graph = helper.make_graph(
        nodes, "face_mesh_stub",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, MESH_SIZE, MESH_SIZE, 3])],
        [helper.make_tensor_value_info("Identity", TensorProto.FLOAT, [1, 1, 1, MESH_POINTS * 3]),
         helper.make_tensor_value_info("Identity_1", TensorProto.FLOAT, [1, 1, 1, 1]),
         helper.make_tensor_value_info("Identity_2", TensorProto.FLOAT, [1, 1, 1, 1])], inits)
    return _save(graph, Path(path))


def write_eye_stubs(repo_root: str | Path) -> None:
    """Both stand-ins where the published repo has the real files."""
    write_detector_stub(Path(repo_root) / DETECTOR_FILE)
    write_mesh_stub(Path(repo_root) / MESH_FILE)
