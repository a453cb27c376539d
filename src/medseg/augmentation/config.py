"""The augmentation configuration: probabilities and ranges as plain, JSON-ready data.

Defaults are nnU-Net v2's training pipeline (nnunetv2 2.8.1, `nnUNetTrainer.get_training_transforms`
with batchgeneratorsv2 0.3.6); docs/augmentation.md has the table and the few places where the
meaning of a number is spelled out more precisely than nnU-Net's names do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

IMAGE_MODES = ("linear", "cubic")
LABEL_MODES = ("linear", "nearest")


@dataclass
class AugmentationConfig:
    """Every probability is per sample; `*_p_per_channel` is then per image channel.

    Spatial conventions (all axes in array order, z y x):
    - `rotation_deg`: the largest angle about each axis, in degrees; None picks nnU-Net's rule
      (3D: 30; in-plane (anisotropic 3D): 180; 2D: 180, or 15 when the patch's sides differ by
      more than 1.5x).
    - `scale_range`: the factor applied to sampling coordinates, as in nnU-Net: 1.4 samples a
      region 1.4x larger, so structures look 1.4x smaller. One factor for all axes.
    - `in_plane`: rotate and scale about the first axis only (nnU-Net's "dummy 2D"). None
      decides from the patch: largest side / first side > `anisotropy_threshold`.
    - `elastic_scale`: smoothness of the displacement field, as a fraction of the patch side;
      `elastic_magnitude`: its largest displacement, as a fraction of the patch side.
    - `mirror_axes`: spatial axes that may be flipped (None = all), each with `mirror_p`.
    """

    # spatial: one sampling grid, one interpolation
    rotation_p: float = 0.2
    rotation_deg: float | None = None
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    elastic_p: float = 0.0
    elastic_scale: tuple[float, float] = (0.1, 0.2)
    elastic_magnitude: tuple[float, float] = (0.0, 0.05)
    mirror_p: float = 0.5
    mirror_axes: tuple[int, ...] | None = None
    in_plane: bool | None = None
    anisotropy_threshold: float = 3.0
    image_interpolation: str = "linear"
    label_interpolation: str = "linear"
    # intensity, in nnU-Net's order
    noise_p: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)
    blur_p: float = 0.2
    blur_p_per_channel: float = 0.5
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_p: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_p: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    lowres_p: float = 0.25
    lowres_p_per_channel: float = 0.5
    lowres_scale: tuple[float, float] = (0.5, 1.0)
    inverted_gamma_p: float = 0.1
    gamma_p: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                setattr(self, f.name, tuple(v))
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_p") or f.name.endswith("_p_per_channel"):
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"augmentation: {f.name} = {v} is not a probability in [0, 1]")
            elif f.name.endswith(("_range", "_std", "_sigma", "_scale", "_magnitude")):
                if len(v) != 2 or v[0] > v[1] or v[0] < 0:
                    raise ValueError(f"augmentation: {f.name} = {list(v)} must be [low, high] with 0 <= low <= high")
        if self.scale_range[0] <= 0 or self.lowres_scale[0] <= 0 or self.gamma_range[0] <= 0:
            raise ValueError("augmentation: scale_range, lowres_scale and gamma_range must be above 0")
        if self.lowres_scale[1] > 1:
            raise ValueError("augmentation: lowres_scale must not exceed 1 (it is a downsampling factor)")
        if self.image_interpolation not in IMAGE_MODES:
            raise ValueError(f"augmentation: image_interpolation must be one of {IMAGE_MODES}")
        if self.label_interpolation not in LABEL_MODES:
            raise ValueError(f"augmentation: label_interpolation must be one of {LABEL_MODES}")
        if self.rotation_deg is not None and self.rotation_deg < 0:
            raise ValueError("augmentation: rotation_deg is the largest angle and must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AugmentationConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"augmentation: unknown setting(s) {', '.join(unknown)}")
        return cls(**d)
