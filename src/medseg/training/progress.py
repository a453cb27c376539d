"""`progress.png`: the curves a person checks while a model trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.utils.files import atomic_path


def plot_progress(history: list[dict[str, Any]], path: str | Path) -> None:
    """Losses, pseudo Dice (with its moving average), learning rate and epoch time per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    ax = axes[0]
    ax.plot(ep, [h["train_loss"] for h in history], label="train loss", color="tab:blue")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation loss", color="tab:red")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["pseudo_dice"] for h in history], ":", label="pseudo Dice", color="tab:green")
    ax2.plot(ep, [h["pseudo_dice_ema"] for h in history], label="pseudo Dice (moving average)", color="tab:green")
    ax2.set_ylabel("pseudo Dice")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    axes[1].plot(ep, [h["epoch_time_s"] for h in history], color="tab:purple")
    axes[1].set_ylabel("epoch time (s)")
    axes[2].plot(ep, [h["lr"] for h in history], color="tab:orange")
    axes[2].set_ylabel("learning rate")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
