"""LivePortrait's renderer (the networks Ditto drives): appearance encoder, motion extractor,
warping network, SPADE decoder and stitching MLP, loaded from the published files."""
from importlib import import_module

# Names resolve lazily (PEP 562): sizes.py is read by config loading, which must not import torch.
_EXPORTS = {
    "MotionInfo": "kinematics", "bins_to_degrees": "kinematics", "drive_info": "kinematics",
    "motion_from_vector": "kinematics", "rotation_matrix": "kinematics", "transform_keypoints": "kinematics",
    "RendererLoadReport": "loader", "check_renderer_folder": "loader", "load_renderer": "loader",
    "Renderer": "renderer", "exact_float32": "renderer",
    "AppearanceSizes": "sizes", "DecoderSizes": "sizes", "DenseMotionSizes": "sizes", "MotionSizes": "sizes",
    "RendererSizes": "sizes", "StitchSizes": "sizes", "WarpSizes": "sizes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
