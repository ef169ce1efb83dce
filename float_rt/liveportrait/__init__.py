"""LivePortrait's renderer (the networks Ditto drives): appearance encoder, motion extractor,
warping network, SPADE decoder and stitching MLP, loaded from the published files."""
from ..lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _EXPORTS)
