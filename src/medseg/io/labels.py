"""What dataset.json's `labels` declare, and what a network learns from them.

Three kinds of declaration, as in nnU-Net v2:

- classes: ``{"background": 0, "organ": 1, "lesion": 2}``. The network has one softmax
  channel per value 0..max; each voxel gets one class.
- regions: labels whose values are lists, ``{"background": 0, "organ": [1, 2], "lesion": [2]}``,
  with ``"regions_class_order": [1, 2]`` beside `labels`. A region is the union of its values;
  regions may nest. The network has one sigmoid channel per region (background is none), and a
  label map is rebuilt by writing ``regions_class_order[i]`` where region i is predicted, in
  order, so later (nested) regions overwrite earlier ones.
- an ignore label, ``"ignore": N`` with N above every other value, in either kind: its voxels
  are unannotated. They have no output channel, add nothing to the loss or to any metric, and
  are never a foreground-sampling target.

`LabelScheme.parse` checks a declaration and says what is wrong in one line; everything else
(network outputs, loss, oversampling, prediction, evaluation) asks the scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from medseg.errors import MedsegError

IGNORE = "ignore"


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python; `true` in JSON is not a label value.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LabelScheme:
    """A checked label declaration; build it with `LabelScheme.parse`.

    labels: name -> value, or name -> list of values (a region), in declared order, the ignore
        label included.
    regions_class_order: for region datasets, the value written for each region, in order.
    """

    labels: dict[str, int | list[int]]
    regions_class_order: list[int] | None = None

    @classmethod
    def parse(cls, labels: Any, regions_class_order: Any = None, path: str | Path | None = None) -> "LabelScheme":
        """Check `labels` (and `regions_class_order`) as read from JSON; `path` names the file
        in the `MedsegError` raised for a bad declaration."""
        if not isinstance(labels, Mapping) or not labels:
            raise MedsegError("'labels' must map label names to integer values", path)
        parsed: dict[str, int | list[int]] = {}
        for name, value in labels.items():
            if isinstance(value, (list, tuple)):
                if not value or not all(_is_int(v) and v > 0 for v in value):
                    raise MedsegError(f"region '{name}' must be a non-empty list of positive integers, "
                                      f"got {list(value)!r}", path)
                parsed[str(name)] = sorted(set(value))
            elif _is_int(value) and value >= 0:
                parsed[str(name)] = value
            else:
                raise MedsegError(f"label '{name}' must be a non-negative integer, got {value!r}", path)
        if 0 not in parsed.values():
            raise MedsegError("'labels' must declare background as 0", path)
        ignore = parsed.get(IGNORE)
        if isinstance(ignore, list):
            raise MedsegError("the ignore label must be one integer, not a list", path)
        others = [v for name, value in parsed.items() if name != IGNORE
                  for v in (value if isinstance(value, list) else [value])]
        if ignore is not None and ignore <= max(others):
            raise MedsegError(f"the ignore label ({ignore}) must be the highest label value; "
                              f"{max(others)} is declared", path)
        regions = [name for name, value in parsed.items() if isinstance(value, list)]
        if not regions:
            ints = list(parsed.values())
            if len(set(ints)) != len(ints):
                raise MedsegError("two labels share one value", path)
            if regions_class_order is not None:
                raise MedsegError("'regions_class_order' is given but no label is a region (a list of values)", path)
            return cls(parsed)
        foreground = [name for name, value in parsed.items() if name != IGNORE and value != 0]
        # A single value beside lists is a region of one value (nnU-Net's "enhancing": 3).
        parsed = {name: ([value] if name in foreground and not isinstance(value, list) else value)
                  for name, value in parsed.items()}
        if regions_class_order is None:
            raise MedsegError("labels declare regions (lists of values) but 'regions_class_order' is missing", path)
        if (not isinstance(regions_class_order, (list, tuple))
                or not all(_is_int(v) for v in regions_class_order)):
            raise MedsegError(f"'regions_class_order' must be a list of integers, got {regions_class_order!r}", path)
        if len(regions_class_order) != len(foreground):
            raise MedsegError(f"'regions_class_order' has {len(regions_class_order)} values for "
                              f"{len(foreground)} regions ({', '.join(foreground)})", path)
        for name, value in zip(foreground, regions_class_order):
            if value not in parsed[name]:
                raise MedsegError(f"'regions_class_order' writes {value} for region '{name}', "
                                  f"which is not one of its values {parsed[name]}", path)
        return cls(parsed, [int(v) for v in regions_class_order])

    @classmethod
    def of(cls, holder: Mapping[str, Any] | Any, path: str | Path | None = None) -> "LabelScheme":
        """The scheme of anything carrying `labels` and optionally `regions_class_order`: a
        model description (model.json), a fingerprint, or a `Plans` object."""
        if isinstance(holder, Mapping):
            return cls.parse(holder["labels"], holder.get("regions_class_order"), path)
        return cls.parse(holder.labels, getattr(holder, "regions_class_order", None), path)

    # -- what the declaration means --------------------------------------------------------
    @property
    def ignore(self) -> int | None:
        """The ignore value, or None."""
        value = self.labels.get(IGNORE)
        return value if isinstance(value, int) else None

    @property
    def has_regions(self) -> bool:
        return self.regions_class_order is not None

    @property
    def foreground(self) -> dict[str, tuple[int, ...]]:
        """Each structure the network learns, in declared order: name -> its values (one value
        for a class, the union's values for a region). Background and ignore are left out."""
        return {name: tuple(value) if isinstance(value, list) else (value,)
                for name, value in self.labels.items() if name != IGNORE and value != 0}

    @property
    def regions(self) -> list[tuple[int, ...]]:
        """The values of each region, in the order of the network's channels."""
        return list(self.foreground.values()) if self.has_regions else []

    @property
    def num_outputs(self) -> int:
        """Network output channels: one per region, or one per class value 0..max (ignore has none)."""
        if self.has_regions:
            return len(self.foreground)
        return max([0] + [v[0] for v in self.foreground.values()]) + 1

    @property
    def num_predicted_values(self) -> int:
        """Values 0..n-1 a predicted label map can hold: background and every structure's values
        (never the ignore label). A cascade stage one-hot encodes its previous stage's map over them."""
        return max([0] + self.foreground_values) + 1

    @property
    def output_names(self) -> list[str]:
        """A name per structure whose Dice training reports: the regions, or the foreground classes
        by value."""
        if self.has_regions:
            return list(self.foreground)
        return [name for name, _ in sorted(self.foreground.items(), key=lambda kv: kv[1])]

    @property
    def foreground_values(self) -> list[int]:
        """Voxel values a label map may hold other than background and ignore: the targets of
        foreground oversampling."""
        return sorted({v for values in self.foreground.values() for v in values})

    @property
    def label_values(self) -> list[int]:
        """Every value a label file may hold: background, the foreground values and ignore."""
        return [0] + self.foreground_values + ([self.ignore] if self.ignore is not None else [])

    def to_json(self) -> dict[str, Any]:
        """`labels`, and `regions_class_order` for region datasets, as model.json stores them."""
        out: dict[str, Any] = {"labels": dict(self.labels)}
        if self.regions_class_order is not None:
            out["regions_class_order"] = list(self.regions_class_order)
        return out

    def display_values(self) -> dict[str, int]:
        """One label-map value per structure, for colours and overlays: a class's value, a
        region's value in `regions_class_order` (the value written where it is predicted)."""
        if not self.has_regions:
            return {name: values[0] for name, values in self.foreground.items()}
        return dict(zip(self.foreground, self.regions_class_order))


def structures(labels: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """name -> values of each structure of a labels mapping as stored (dataset.json, a
    fingerprint, summary.json), unchecked; background and ignore are left out."""
    out = {}
    for name, value in labels.items():
        values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        if name != IGNORE and values and values != (0,):
            out[str(name)] = values
    return out


def display_values(labels: Mapping[str, Any], regions_class_order: Sequence[int] | None = None) -> dict[str, int]:
    """`LabelScheme.display_values` for labels that may not parse (summary.json holds the
    structures only): `regions_class_order` when it has a value per structure, else each
    structure's smallest value."""
    try:
        return LabelScheme.parse(labels, regions_class_order).display_values()
    except MedsegError:
        found = structures(labels)
        if regions_class_order is not None and len(regions_class_order) == len(found):
            return {name: int(v) for name, v in zip(found, regions_class_order)}
        return {name: min(values) for name, values in found.items()}
