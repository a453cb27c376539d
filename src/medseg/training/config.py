"""The training configuration: plain data, saved beside every model as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


# nnU-Net's defaults: SGD (Nesterov, momentum 0.99) at 1e-2; AdamW at 1e-3 as nnUNetTrainerAdam1en3.
DEFAULT_LR = {"sgd": 1e-2, "adamw": 1e-3}


@dataclass
class TrainingConfig:
    epochs: int = 1000
    iters_per_epoch: int = 250
    # Validation iterations per epoch; None: a fifth of iters_per_epoch (nnU-Net's 50 for 250),
    # so a short CPU epoch does not spend as long validating as training.
    val_iters: int | None = None
    lr: float | None = None
    optimizer: str = "auto"
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    oversample: float = 1 / 3
    augmentation: bool = True
    # AugmentationConfig settings that replace nnU-Net's defaults, e.g. {"contrast_p": 1.0}.
    augmentation_options: dict[str, Any] = field(default_factory=dict)
    precision: str = "auto"
    channels_last: bool = False
    max_time_s: float | None = None
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    loss: str | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.val_iters is None:
            self.val_iters = max(1, self.iters_per_epoch // 5)
        if self.optimizer != "auto" and self.optimizer not in DEFAULT_LR:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {['auto', *sorted(DEFAULT_LR)]}")
        from medseg.augmentation.config import AugmentationConfig
        AugmentationConfig.from_dict(self.augmentation_options)  # unknown keys and bad values fail here

    @property
    def optimizer_name(self) -> str:
        """The optimiser trained with: "auto" means AdamW for a time-budgeted run (`max_time_s`),
        nnU-Net's SGD otherwise."""
        if self.optimizer != "auto":
            return self.optimizer
        return "adamw" if self.max_time_s else "sgd"

    @property
    def base_lr(self) -> float:
        """The schedule's starting learning rate: `lr`, or the optimiser's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer_name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainingConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '1h30m' or plain seconds -> seconds."""
    import re

    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"cannot read duration {text!r}; write e.g. 90s, 15m, 2h or 1h30m")
    unit = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * unit[u] for n, u in parts)
