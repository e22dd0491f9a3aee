"""Qwen2-VL / Qwen2.5-Omni video preprocessing without torchvision.

transformers' Qwen video processor needs torchvision, which cannot load with the CPU
torch wheel on our machines; this module reproduces its math with numpy and PIL:

1. ``smart_resize``: height and width rounded to multiples of ``factor = patch_size *
   merge_size`` (28), scaled into ``[min_pixels, max_pixels]``, aspect kept;
2. resize every frame (PIL bicubic with antialiasing, as torchvision's antialiased
   bicubic), rescale by 1/255, normalise with the CLIP mean and std;
3. pad the frame count to a multiple of ``temporal_patch_size`` (2) by repeating the last
   frame, then cut ``(temporal_patch_size, patch_size, patch_size)`` patches, ordered so
   that each ``merge_size x merge_size`` block of patches is contiguous (the order the
   vision merger expects): ``pixel_values`` of shape
   ``(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size ** 2)``.
The model sees ``grid_t * grid_h * grid_w / merge_size ** 2`` video tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionSpec:
    """Processor parameters (``preprocessor_config.json`` keys of the same names)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    @classmethod
    def from_config(cls, config: dict, defaults: VisionSpec | None = None) -> VisionSpec:
        """The spec of a ``preprocessor_config.json`` dict; keys it lacks come from
        ``defaults`` (a model family's processor defaults; else this class's)."""
        known = {k: config[k] for k in cls.__dataclass_fields__ if k in config}
        for key in ("image_mean", "image_std"):
            if key in known:
                known[key] = tuple(known[key])
        return replace(defaults or cls(), **known)


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """``(height, width)`` divisible by ``factor`` with area in ``[min_pixels, max_pixels]``."""
    if min(height, width) <= 0 or max(height, width) / min(height, width) > 200:
        raise ValueError(f"cannot resize a {width}x{height} frame (empty or aspect ratio > 200)")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass
class VideoInputs:
    pixel_values: np.ndarray  # (grid_t * grid_h * grid_w, C * tp * p * p) float32
    grid_thw: tuple[int, int, int]
    second_per_grid: float  # seconds one temporal patch spans
    merge_size: int = 2

    @property
    def n_tokens(self) -> int:
        """Video placeholder tokens the model expects: patches / merge_size ** 2."""
        return int(np.prod(self.grid_thw)) // self.merge_size ** 2


def preprocess_video(frames: Sequence[np.ndarray], frame_times: Sequence[float] | None = None,
                     spec: VisionSpec = VisionSpec()) -> VideoInputs:
    """Patches of RGB uint8 frames ``(H, W, 3)`` (all the same size) for a Qwen vision tower.
    ``frame_times`` (seconds) give the sampling rate for ``second_per_grid`` (1 fps when absent)."""
    if not frames:
        raise ValueError("no frames")
    height, width = frames[0].shape[:2]
    p, tp, m = spec.patch_size, spec.temporal_patch_size, spec.merge_size
    h_bar, w_bar = smart_resize(height, width, p * m, spec.min_pixels, spec.max_pixels)
    resized = [np.asarray(Image.fromarray(f).resize((w_bar, h_bar), Image.BICUBIC)) for f in frames]
    video = np.stack(resized).astype(np.float32) / 255.0
    video = (video - np.array(spec.image_mean, np.float32)) / np.array(spec.image_std, np.float32)
    video = video.transpose(0, 3, 1, 2)  # (T, C, H, W)
    if len(video) % tp:
        video = np.concatenate([video, np.repeat(video[-1:], tp - len(video) % tp, axis=0)])
    t, c = video.shape[:2]
    gt, gh, gw = t // tp, h_bar // p, w_bar // p
    patches = video.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = np.ascontiguousarray(patches.reshape(gt * gh * gw, c * tp * p * p), dtype=np.float32)
    fps = 1.0
    if frame_times is not None and len(frame_times) > 1 and frame_times[-1] > frame_times[0]:
        fps = (len(frame_times) - 1) / (frame_times[-1] - frame_times[0])
    return VideoInputs(pixel_values, (gt, gh, gw), tp / fps, m)
