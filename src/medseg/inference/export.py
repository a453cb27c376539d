"""Export trained folds to ONNX or TorchScript, for serving outside medseg.

Each fold's network (in eval mode: one full-resolution logits output) is written beside its
checkpoint as `model.onnx` or `model.torchscript.pt`, with a dynamic batch axis and the
spatial size of the plan's patch (what the sliding window feeds it).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch

from medseg.errors import MedsegError
from medseg.inference.predictor import Predictor
from medseg.training.previous_stage import network_in_channels
from medseg.utils.files import atomic_path

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}


def export_model(model_dir: str | Path, fmt: str = "onnx", folds: Sequence[int | str] | None = None,
                 opset: int = 17) -> list[Path]:
    """Export the chosen folds (default: all) of `model_dir`; returns the written files."""
    if fmt not in FORMATS:
        raise MedsegError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    model_dir = Path(model_dir)
    # Only the networks are exported: a cascade stage's previous stage is not loaded.
    pred = Predictor.from_model_dir(model_dir, folds=folds, device="cpu", precision="fp32", previous_stage=None)
    fold_dirs = pred.fold_dirs
    plan = pred.plan
    example = torch.zeros((1, network_in_channels(pred.desc), *plan.patch_size))
    written = []
    for fold_dir, net in zip(fold_dirs, pred.models):
        net = net.cpu().eval()
        target = fold_dir / FORMATS[fmt]
        with atomic_path(target) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and training-mode notes
            if fmt == "onnx":
                torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["image"], output_names=["logits"],
                                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
            else:
                torch.jit.save(torch.jit.trace(net, example), str(tmp))
        written.append(target)
    return written


def onnx_forward(path: Path, threads: int | None = None):
    """A `predict(x) -> logits` function backed by an ONNX Runtime session on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MedsegError("onnxruntime is not installed; install it with: pip install 'medseg[onnx]'") from None
    if not path.exists():
        raise MedsegError("no ONNX model; run `medseg export MODEL_DIR --format onnx` first", path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"image": x.float().numpy()})[0])

    return run
