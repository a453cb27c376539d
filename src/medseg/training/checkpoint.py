"""Checkpoints: safetensors for tensors, JSON for everything else. Loading never unpickles.

`NAME.safetensors` holds the model weights (`model/...`), the optimiser's per-parameter
buffers (`optimizer/<index>/<buffer>`) and the torch RNG state; its metadata carries the
JSON state too, so the one file is self-consistent even if a process dies between writes.
`NAME.json` is the same state, indented for people.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medseg.errors import MedsegError
from medseg.utils.files import atomic_path, write_json


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser's state into tensors (by parameter index) and JSON-able settings."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: str | Path, name: str, model: torch.nn.Module, state: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None) -> Path:
    """Write `folder/name.safetensors` and `folder/name.json` atomically."""
    folder = Path(folder)
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = dict(state)
    if optimizer is not None:
        opt_tensors, opt_meta = optimizer_tensors(optimizer)
        tensors.update(opt_tensors)
        state["optimizer"] = opt_meta
    tensors["rng/torch"] = torch.get_rng_state()
    path = folder / f"{name}.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"medseg_state": json.dumps(state)})
    write_json(folder / f"{name}.json", state)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and state of a checkpoint file (safetensors only: no code runs)."""
    path = Path(path)
    if not path.exists():
        raise MedsegError("checkpoint not found", path)
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise MedsegError(f"not a readable safetensors checkpoint ({err})", path) from None
    try:
        state = json.loads(meta["medseg_state"])
    except (KeyError, json.JSONDecodeError):
        raise MedsegError("checkpoint has no medseg state in its metadata", path) from None
    return tensors, state


def model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
