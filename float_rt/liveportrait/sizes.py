"""Constructor sizes of the five LivePortrait networks Ditto renders with.

The defaults are the published sizes (the files under ``ditto_pytorch/models``).  ``from_dict``
reads the ``sizes`` object of a reference case's ``config.json`` (same field names).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class AppearanceSizes:
    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6

    def width(self, level: int) -> int:
        """Channels after ``level`` down blocks (level 0 = after the stem)."""
        return min(self.max_features, self.block_expansion * 2 ** level)


@dataclass(frozen=True)
class MotionSizes:
    num_kp: int = 21
    num_bins: int = 66
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)


@dataclass(frozen=True)
class DenseMotionSizes:
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4


@dataclass(frozen=True)
class WarpSizes:
    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    estimate_occlusion_map: bool = True
    dense_motion: DenseMotionSizes = field(default_factory=DenseMotionSizes)

    @property
    def out_channels(self) -> int:
        return self.block_expansion * 2 ** self.num_down_blocks


@dataclass(frozen=True)
class DecoderSizes:
    upscale: int = 2
    max_features: int = 512
    block_expansion: int = 64
    out_channels: int = 64
    num_down_blocks: int = 2

    @property
    def in_channels(self) -> int:
        """Channels of the warped feature the decoder takes (and conditions every SPADE on)."""
        return min(self.max_features, self.block_expansion * 2 ** self.num_down_blocks)


@dataclass(frozen=True)
class StitchSizes:
    input_size: int = 126
    hidden_sizes: tuple[int, ...] = (128, 128, 64)
    output_size: int = 65


@dataclass(frozen=True)
class RendererSizes:
    appearance: AppearanceSizes = field(default_factory=AppearanceSizes)
    motion: MotionSizes = field(default_factory=MotionSizes)
    warp: WarpSizes = field(default_factory=WarpSizes)
    decoder: DecoderSizes = field(default_factory=DecoderSizes)
    stitch: StitchSizes = field(default_factory=StitchSizes)

    @classmethod
    def from_dict(cls, sizes: dict) -> RendererSizes:
        """From a case's ``config.json`` ``sizes`` (keys named after the published files)."""
        def make(kind, raw):
            kwargs = {}
            for f in fields(kind):
                if f.name not in raw:
                    continue
                v = raw[f.name]
                if f.name == "dense_motion":
                    v = make(DenseMotionSizes, v)
                elif isinstance(v, list):
                    v = tuple(v)
                kwargs[f.name] = v
            return kind(**kwargs)

        return cls(appearance=make(AppearanceSizes, sizes.get("appearance_extractor", {})),
                   motion=make(MotionSizes, sizes.get("motion_extractor", {})),
                   warp=make(WarpSizes, sizes.get("warp_network", {})),
                   decoder=make(DecoderSizes, sizes.get("decoder", {})),
                   stitch=make(StitchSizes, sizes.get("stitch_network", {})))
