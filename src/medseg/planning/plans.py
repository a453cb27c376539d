"""Plans as data: `plans.json`, readable and editable, obeyed by every later stage.

A configuration may say `"inherits": "3d_fullres"` and override only what differs:
```
"3d_fullres_bs4": {"inherits": "3d_fullres", "batch_size": 4}
```
Nested objects (model_options, resampling) are merged key by key.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError
from medseg.utils.files import read_json, write_json


@dataclass
class ConfigurationPlan:
    """One configuration. Sizes and spacings are in (z, y, x) order; spacing in millimetres."""

    name: str
    spatial_dims: int
    target_spacing: list[float]
    patch_size: list[int]
    batch_size: int
    normalization: list[str]
    model: str = "dynunet"
    model_options: dict[str, Any] = field(default_factory=dict)
    # data/label: interpolation orders; separate_axis: the spatial axis (z, y, x) resampled on
    # its own (nearest), or None; anisotropy_threshold (imported nnU-Net models): decide the
    # axis per case instead (`medseg.preprocessing.preprocess.separate_axis_for`).
    resampling: dict[str, Any] = field(default_factory=lambda: {"data": "linear", "label": "linear",
                                                                "separate_axis": None})
    median_shape: list[float] = field(default_factory=list)  # median case shape at target_spacing
    loss: str = "dice_ce"
    mirror_axes: list[int] | None = None  # spatial axes augmentation and test-time mirroring may flip
    # A cascade stage: the configuration whose segmentation (one-hot, foreground classes) is
    # added to the network's input channels (nnU-Net's `3d_cascade_fullres` after `3d_lowres`).
    previous_stage: str | None = None
    predicted_memory_gb: float | None = None
    predicted_iteration_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def divisor(self) -> list[int]:
        """Patch sizes must be multiples of this per axis: the product of the strides."""
        out = [1] * self.spatial_dims
        for s in self.model_options.get("strides", []):
            out = [o * v for o, v in zip(out, s)]
        return out

    @property
    def separate_axis(self) -> int | None:
        """The spatial axis (index in (z, y, x)) resampled on its own, or None. Plans written
        before `separate_axis` say `"separate_z": true` for axis 0."""
        r = self.resampling
        old = 0 if r.get("separate_z") else None
        if "separate_axis" not in r:
            return old
        axis = r["separate_axis"]
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)
                                 or not 0 <= axis < self.spatial_dims):
            raise MedsegError(f"configuration '{self.name}': resampling.separate_axis must be a spatial axis "
                              f"(0..{self.spatial_dims - 1}) or null, not {axis!r}")
        if "separate_z" in r and old != axis:
            # Only a hand edit mixes the two (e.g. an old-style override of a new-style parent).
            raise MedsegError(f"configuration '{self.name}': resampling has separate_axis {axis} and the older "
                              f"separate_z {r['separate_z']}, which disagree; keep separate_axis only")
        return axis

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("name")
        return d


@dataclass
class Plans:
    dataset_name: str
    channel_names: list[str]
    labels: dict[str, int | list[int]]  # as dataset.json declares them (medseg.io.labels)
    intensity: list[dict[str, float]]
    configurations: dict[str, dict[str, Any]]
    planner: dict[str, Any] = field(default_factory=dict)
    regions_class_order: list[int] | None = None  # region datasets: the value each region writes

    def names(self) -> list[str]:
        return list(self.configurations)

    def configuration(self, name: str) -> ConfigurationPlan:
        """The named configuration with inheritance resolved."""
        raw = self._resolve(name, [])
        known = {f.name for f in fields(ConfigurationPlan)}
        unknown = sorted(set(raw) - known - {"inherits"})
        if unknown:
            raise MedsegError(f"configuration '{name}' has unknown keys: {', '.join(unknown)}")
        raw = {k: v for k, v in raw.items() if k in known}
        previous = raw.get("previous_stage")
        if previous is not None and (previous == name or previous not in self.configurations):
            raise MedsegError(f"configuration '{name}' names previous_stage '{previous}', which is not "
                              f"another configuration of the plans ({', '.join(self.configurations)})")
        try:
            return ConfigurationPlan(name=name, **raw)
        except TypeError as err:
            raise MedsegError(f"configuration '{name}' is incomplete: {err}") from None

    def _resolve(self, name: str, seen: list[str]) -> dict[str, Any]:
        if name not in self.configurations:
            raise MedsegError(f"no configuration '{name}' in the plans; have: {', '.join(self.configurations)}")
        if name in seen:
            raise MedsegError(f"configurations inherit in a circle: {' -> '.join(seen + [name])}")
        raw = copy.deepcopy(self.configurations[name])
        parent = raw.pop("inherits", None)
        if parent is None:
            return raw
        return _merge(self._resolve(parent, seen + [name]), raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Plans":
        raw = read_json(path)
        try:
            return cls(**raw)
        except TypeError as err:
            raise MedsegError(f"not a medseg plans file ({err})", path) from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
