"""The training augmentation pipeline: draw each sample's parameters, then apply them.

    aug = Augmenter(AugmentationConfig(), patch_size=(128, 128, 128))
    aug.input_patch_size()            # cut patches this large (centred where the final patch goes)
    image, label, params = aug(image, label, generator)

`params[i]` is sample i's transform as plain data (JSON-ready): `spatial` (rotation, scale, mirror,
elastic) and one entry per intensity transform, None where it was not drawn. `aug.apply(image,
label, params)` reproduces the output from the parameters alone, and `describe(params[i])` says
it in one line. The order is nnU-Net v2's: spatial, noise, blur, brightness, contrast,
low resolution, inverted gamma, gamma; mirroring is part of the spatial grid (nnU-Net mirrors
last, which is the same transform since every intensity step treats mirrored images alike).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from medseg.augmentation import intensity as I
from medseg.augmentation.config import AugmentationConfig
from medseg.augmentation.spatial import input_patch_size as _input_patch_size
from medseg.augmentation.resampling import Workspace
from medseg.augmentation.spatial import transform_sample


def default_rotation_deg(patch_size: Sequence[int], in_plane: bool) -> float:
    """nnU-Net v2's rule: 2D 180 deg (15 if one side is over 1.5x the other), in-plane 180, 3D 30."""
    if len(patch_size) == 2:
        return 15.0 if max(patch_size) / min(patch_size) > 1.5 else 180.0
    return 180.0 if in_plane else 30.0


def is_anisotropic(patch_size: Sequence[int], threshold: float = 3.0) -> bool:
    """nnU-Net's "dummy 2D" test: the first axis is much shorter than the longest."""
    return len(patch_size) == 3 and max(patch_size) / patch_size[0] > threshold


class Augmenter:
    """nnU-Net v2's training augmentation as one grid per sample plus in-place intensity steps.

    `patch_size` is the final patch (the network's input), in voxels (z, y, x) or (y, x).
    Tensors may live on any device; parameters are drawn from a CPU `torch.Generator`.
    An Augmenter keeps scratch buffers between calls: use one per thread.
    """

    def __init__(self, config: AugmentationConfig | None = None, patch_size: Sequence[int] = ()):
        self.config = config or AugmentationConfig()
        self.patch_size = tuple(int(n) for n in patch_size)
        if len(self.patch_size) not in (2, 3):
            raise ValueError(f"patch_size must have 2 or 3 sides, got {list(patch_size)}")
        cfg = self.config
        self.spatial_dims = len(self.patch_size)
        in_plane = (cfg.in_plane if cfg.in_plane is not None
                    else is_anisotropic(self.patch_size, cfg.anisotropy_threshold))
        self.in_plane = bool(in_plane) and self.spatial_dims == 3
        self.rotation_deg = (cfg.rotation_deg if cfg.rotation_deg is not None
                             else default_rotation_deg(self.patch_size, self.in_plane))
        axes = cfg.mirror_axes if cfg.mirror_axes is not None else range(self.spatial_dims)
        self.mirror_axes = tuple(int(a) for a in axes)
        if any(not 0 <= a < self.spatial_dims for a in self.mirror_axes):
            raise ValueError(f"mirror_axes {list(self.mirror_axes)} must be spatial axes below {self.spatial_dims}")
        free_3d = self.spatial_dims == 3 and not self.in_plane
        if cfg.image_interpolation == "cubic" and free_3d and (cfg.rotation_p > 0 or cfg.elastic_p > 0):
            raise ValueError("image_interpolation='cubic' needs 2D patches or in-plane rotation: torch has no "
                             "tricubic grid sampler; use 'linear' for 3D rotations")
        self.workspace = Workspace()
        if cfg.image_interpolation == "cubic" and cfg.elastic_p > 0:
            raise ValueError("image_interpolation='cubic' is not available with elastic deformation in 3D")

    # -- geometry --------------------------------------------------------------------------------
    def input_patch_size(self, final_patch_size: Sequence[int] | None = None) -> tuple[int, ...]:
        """The patch the sampler must cut, centred where the final patch would be centred.

        Rotating within range leaves no padding anywhere in the final patch unless it is also
        zoomed out; zooming out (scale > 1) can bring padding into the corners but never into
        the ellipsoid inscribed in the patch. With no spatial transform this is the final patch."""
        final = tuple(final_patch_size) if final_patch_size is not None else self.patch_size
        cfg = self.config
        rot = self.rotation_deg if cfg.rotation_p > 0 else 0.0
        scale = max(cfg.scale_range[1], 1.0) if cfg.scale_p > 0 else 1.0
        elastic = cfg.elastic_magnitude[1] if cfg.elastic_p > 0 else 0.0
        cubic = cfg.image_interpolation == "cubic" and (rot > 0 or cfg.scale_p > 0)
        return _input_patch_size(final, max_rotation_deg=rot, max_scale=scale, in_plane=self.in_plane,
                                 elastic_magnitude=elastic, cubic=cubic)

    # -- parameters ------------------------------------------------------------------------------
    def sample(self, batch_size: int, channels: int, generator: torch.Generator) -> list[dict[str, Any]]:
        """Draw the parameters of `batch_size` samples (plain data)."""
        return [self.sample_one(channels, generator) for _ in range(batch_size)]

    def sample_one(self, channels: int, gen: torch.Generator) -> dict[str, Any]:
        """One sample's parameters; with one generator per sample (seeded from the step and the
        sample's index) a batch is the same however it is split between processes."""
        cfg = self.config
        dims = self.spatial_dims
        chosen = lambda p: float(torch.rand(1, generator=gen)) < p  # noqa: E731
        spatial: dict[str, Any] = {"rotation_deg": None, "scale": None, "mirror": [], "elastic": None}
        if chosen(cfg.rotation_p) and self.rotation_deg > 0:
            n = 1 if dims == 2 or self.in_plane else 3
            spatial["rotation_deg"] = [I.uniform(gen, -self.rotation_deg, self.rotation_deg) for _ in range(n)]
        if chosen(cfg.scale_p):
            spatial["scale"] = I.uniform(gen, *cfg.scale_range)
        if chosen(cfg.elastic_p):
            spatial["elastic"] = {"seed": I.draw_seed(gen),
                                  "sigma": [I.uniform(gen, *cfg.elastic_scale) for _ in range(dims)],
                                  "magnitude": [I.uniform(gen, *cfg.elastic_magnitude) for _ in range(dims)]}
        spatial["mirror"] = [a for a in self.mirror_axes if chosen(cfg.mirror_p)]

        def per_channel(p: float, draw) -> list | None:
            values = [draw() if chosen(p) else None for _ in range(channels)]
            return values if any(v is not None for v in values) else None

        params: dict[str, Any] = {"spatial": spatial}
        params["noise"] = ({"std": I.uniform(gen, *cfg.noise_std), "seed": I.draw_seed(gen)}
                           if chosen(cfg.noise_p) else None)
        params["blur"] = (per_channel(cfg.blur_p_per_channel,
                                      lambda: [I.uniform(gen, *cfg.blur_sigma) for _ in range(dims)])
                          if chosen(cfg.blur_p) else None)
        params["brightness"] = ([I.two_sided(gen, *cfg.brightness_range) for _ in range(channels)]
                                if chosen(cfg.brightness_p) else None)
        params["contrast"] = ([I.two_sided(gen, *cfg.contrast_range) for _ in range(channels)]
                              if chosen(cfg.contrast_p) else None)
        params["lowres"] = (per_channel(cfg.lowres_p_per_channel, lambda: I.uniform(gen, *cfg.lowres_scale))
                            if chosen(cfg.lowres_p) else None)
        params["inverted_gamma"] = ([I.two_sided(gen, *cfg.gamma_range) for _ in range(channels)]
                                    if chosen(cfg.inverted_gamma_p) else None)
        params["gamma"] = ([I.two_sided(gen, *cfg.gamma_range) for _ in range(channels)]
                           if chosen(cfg.gamma_p) else None)
        return params

    # -- application -----------------------------------------------------------------------------
    def apply(self, image: torch.Tensor, label: torch.Tensor | None, params: Sequence[dict[str, Any]]
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply recorded parameters: image (B, C, *input) float, label (B, *input) integer ->
        (B, C, *final), (B, *final). Deterministic: the same parameters give the same output."""
        if image.ndim != self.spatial_dims + 2:
            raise ValueError(f"image must be (B, C, *spatial) with {self.spatial_dims} spatial axes, "
                             f"got shape {list(image.shape)}")
        if label is not None and tuple(label.shape) != (image.shape[0], *image.shape[2:]):
            raise ValueError(f"label shape {list(label.shape)} does not match image {list(image.shape)}")
        if len(params) != image.shape[0]:
            raise ValueError(f"{len(params)} parameter sets for a batch of {image.shape[0]}")
        if image.dtype != torch.float32:
            image = image.float()
        cfg = self.config
        out_img = torch.empty((image.shape[0], image.shape[1], *self.patch_size), dtype=image.dtype,
                              device=image.device)
        out_lab = (torch.empty((image.shape[0], *self.patch_size), dtype=label.dtype, device=label.device)
                   if label is not None else None)
        keep_axes = (0,) if self.in_plane else ()
        ws = self.workspace
        for i, p in enumerate(params):
            x = out_img[i]
            transform_sample(image[i], label[i] if label is not None else None, p["spatial"], self.patch_size,
                             in_plane=self.in_plane, image_mode=cfg.image_interpolation,
                             label_mode=cfg.label_interpolation, out_image=x,
                             out_label=out_lab[i] if out_lab is not None else None, workspace=ws)
            if p.get("noise"):
                I.add_noise_(x, p["noise"]["std"], p["noise"]["seed"],
                             ws.get("noise", x.shape, x.dtype, x.device))
            if p.get("blur"):
                I.blur_(x, p["blur"], ws.get("blur", x.shape[1:], x.dtype, x.device))
            if p.get("brightness"):
                I.multiply_(x, p["brightness"])
            if p.get("contrast"):
                I.contrast_(x, p["contrast"])
            if p.get("lowres"):
                I.low_resolution_(x, p["lowres"], keep_axes)
            if p.get("inverted_gamma"):
                I.gamma_(x, p["inverted_gamma"], invert=True)
            if p.get("gamma"):
                I.gamma_(x, p["gamma"])
        return out_img, out_lab

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor | None, list[dict[str, Any]]]:
        """Draw parameters for the batch and apply them; returns (image, label, params)."""
        params = self.sample(image.shape[0], image.shape[1], generator)
        img, lab = self.apply(image, label, params)
        return img, lab, params


def describe(params: dict[str, Any]) -> str:
    """One short line per sample: only the transforms that were drawn, rounded for reading."""
    parts = []
    sp = params.get("spatial") or {}
    if sp.get("rotation_deg"):
        parts.append("rot " + "/".join(f"{a:+.0f}" for a in sp["rotation_deg"]))
    if sp.get("scale") is not None:
        parts.append(f"scale {sp['scale']:.2f}")
    if sp.get("elastic"):
        parts.append("elastic")
    if sp.get("mirror"):
        parts.append("flip " + ",".join(str(a) for a in sp["mirror"]))

    def channels(values, fmt="{:.2f}"):
        return "/".join("-" if v is None else fmt.format(v) for v in values)

    if params.get("noise"):
        parts.append(f"noise {params['noise']['std']:.3f}")
    if params.get("blur"):
        parts.append("blur " + "/".join("-" if s is None else f"{max(s):.2f}" for s in params["blur"]))
    for key, name in (("brightness", "bright"), ("contrast", "contrast"), ("lowres", "lowres"),
                      ("inverted_gamma", "inv-gamma"), ("gamma", "gamma")):
        if params.get(key):
            parts.append(f"{name} {channels(params[key])}")
    return ", ".join(parts) if parts else "none"

