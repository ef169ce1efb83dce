"""LivePortrait's renderer (the networks Ditto drives): appearance encoder, motion extractor,
warping network, SPADE decoder and stitching MLP, loaded from the published files."""
from .kinematics import (MotionInfo, bins_to_degrees, drive_info, motion_from_vector, rotation_matrix,
                         transform_keypoints)
from .loader import RendererLoadReport, check_renderer_folder, load_renderer
from .renderer import Renderer, exact_float32
from .sizes import (AppearanceSizes, DecoderSizes, DenseMotionSizes, MotionSizes, RendererSizes, StitchSizes,
                    WarpSizes)

__all__ = ["AppearanceSizes", "DecoderSizes", "DenseMotionSizes", "MotionInfo", "MotionSizes", "Renderer",
           "RendererLoadReport", "RendererSizes", "StitchSizes", "WarpSizes", "bins_to_degrees",
           "check_renderer_folder", "drive_info", "exact_float32", "load_renderer", "motion_from_vector",
           "rotation_matrix", "transform_keypoints"]
