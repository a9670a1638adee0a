import pytest
import torch

from minimuse.config import TokenizerConfig
from minimuse.data import build_dataset
from minimuse.eval.metrics import psnr
from minimuse.tokenizer.autoencoder import Autoencoder, AttnBlock
from minimuse.tokenizer.losses import PatchGAN, adaptive_weight, hinge_d_loss, reconstruction_loss


def small_config(**overrides) -> TokenizerConfig:
    """A tokenizer small enough to run many times in a CPU test."""
    return TokenizerConfig(**{"channels": 8, "latent_dim": 8, "codebook_size": 16, **overrides})


# ---------------------------------------------------------------------------------------------------------
# Shapes and the encode / decode interface
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel_mult, f", [((1, 2), 2), ((1, 2, 2), 4), ((1, 1, 2, 2), 8),
                                             ((1, 1, 2, 2, 2), 16)])
def test_shapes_for_every_downsampling_factor(channel_mult, f):
    torch.manual_seed(0)
    model = Autoencoder(small_config(channel_mult=channel_mult)).eval()
    assert model.f == f
    x = torch.rand(2, 3, 32, 32) * 2 - 1

    rec, q = model(x)
    assert rec.shape == (2, 3, 32, 32)
    assert q.loss.ndim == 0

    ids = model.encode(x)
    assert ids.shape == (2, 32 // f, 32 // f)
    assert ids.dtype == torch.int64
    assert 0 <= ids.min() and ids.max() < 16

    images = model.decode(ids)
    assert images.shape == (2, 3, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    # decode(encode(x)) takes the same path as the forward pass (straight-through value = the code)
    torch.testing.assert_close(images, rec.clamp(-1, 1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bottleneck", ["vq", "kl"])
def test_replicate_padding_encodes_a_flat_image_to_one_token_everywhere(bottleneck):
    """With encoder_padding=replicate a token says what a patch holds, not where it is: an untrained encoder
    already maps a flat-colour image to one latent repeated over the grid. Zero padding marks the border."""
    flat = torch.tensor([0.3, -0.5, 0.1]).view(1, 3, 1, 1).expand(2, 3, 32, 32)
    for padding, position_free in [("zeros", False), ("replicate", True)]:
        torch.manual_seed(0)
        model = Autoencoder(small_config(bottleneck=bottleneck, attention=True, encoder_padding=padding)).eval()
        latents = model.encoder(flat)                                    # (2, C, 8, 8)
        same = torch.allclose(latents, latents[..., :1, :1].expand_as(latents), atol=1e-5)
        assert same == position_free, padding
    if bottleneck == "vq":
        ids = model.encode(flat)                                         # (2, 8, 8), replicate padding
        assert (ids == ids[:, :1, :1]).all()


def test_decode_clamps_to_the_image_range():
    torch.manual_seed(0)
    model = Autoencoder(small_config()).eval()
    with torch.no_grad():
        model.decoder.conv_out.weight.mul_(100.0)  # push the raw output far outside [-1, 1]
    ids = torch.randint(0, 16, (2, 8, 8))
    raw = model.decoder(model.bottleneck.lookup(ids))
    assert raw.abs().max() > 1.5
    images = model.decode(ids)
    assert images.min() >= -1 and images.max() <= 1
    torch.testing.assert_close(images, raw.clamp(-1, 1))


@pytest.mark.parametrize("channel_mult, f", [((1, 2, 2, 2, 2, 2), 32), ((1,), 1), ((), 0.5)])
def test_invalid_channel_mult_is_a_clear_error(channel_mult, f):
    with pytest.raises(ValueError, match=r"channel_mult=.*f = 2, 4, 8, 16") as err:
        Autoencoder(small_config(channel_mult=channel_mult))
    assert f"f={f}" in str(err.value)


def test_attention_variant_runs_and_adds_attention_blocks():
    torch.manual_seed(0)
    model = Autoencoder(small_config(attention=True)).eval()
    assert sum(isinstance(m, AttnBlock) for m in model.modules()) == 2  # encoder and decoder middle
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    rec, _ = model(x)
    assert rec.shape == (2, 3, 32, 32)
    assert model.decode(model.encode(x)).shape == (2, 3, 32, 32)


def test_attention_block_mixes_distant_positions():
    torch.manual_seed(0)
    block = AttnBlock(8)
    x = torch.randn(1, 8, 4, 4)
    y = x.clone()
    y[..., 0, 0] += 1.0  # change only the top-left position
    out_x, out_y = block(x), block(y)
    assert out_x.shape == x.shape
    assert not torch.allclose(out_x[..., 3, 3], out_y[..., 3, 3])  # a 1x1 conv alone could not do this


# ---------------------------------------------------------------------------------------------------------
# It learns: overfit a handful of Shapes images
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Tiny convolutions gain nothing from threads, and on a busy machine threads spin: a 10x slowdown."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_overfits_a_batch_of_shapes(one_thread):
    torch.manual_seed(0)
    data = build_dataset("shapes", 32, "train", size=8)
    x = torch.stack([data[i][0] for i in range(len(data))])  # (8, 3, 32, 32)
    model = Autoencoder(small_config(channels=16, channel_mult=(1, 2, 2), latent_dim=16, codebook_size=128))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(400):
        rec, q = model(x)
        loss = reconstruction_loss(x, rec, "l1") + q.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    ids = model.encode(x)
    score = psnr(model.decode(ids), x)  # (8,) dB
    # Measured 28.3 dB (seeds 1 and 2: 28.6 and 26.4); predicting the mean image gives ~17.7 dB.
    assert score.mean() > 24.0, score
    assert ids.unique().numel() >= 16  # not a collapsed codebook


# ---------------------------------------------------------------------------------------------------------
# Losses and the discriminator
# ---------------------------------------------------------------------------------------------------------


def test_adaptive_weight_matches_its_formula():
    torch.manual_seed(0)
    W = torch.randn(3, 4, requires_grad=True)  # stands in for the decoder's last layer
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    rec = (W * a).sum()  # d rec / dW = a
    gan = (W**2 * b).sum()  # d gan / dW = 2 W b
    weight = adaptive_weight(rec, gan, W)
    expected = a.norm() / ((2 * W.detach() * b).norm() + 1e-6)
    torch.testing.assert_close(weight, expected)
    assert weight.ndim == 0
    assert not weight.requires_grad and weight.grad_fn is None  # detached: scales the loss, is not optimised
    # The graph is kept, so the caller can still back-propagate the weighted loss.
    (rec + weight * gan).backward()
    torch.testing.assert_close(W.grad, a + weight * 2 * W.detach() * b)


def test_adaptive_weight_is_clamped():
    W = torch.ones(2, 2, requires_grad=True)
    rec = (W * 3.0).sum()  # gradient norm 6
    gan = (W * 1e-9).sum()  # almost no GAN gradient: the raw ratio would be ~6e6
    assert adaptive_weight(rec, gan, W).item() == pytest.approx(1e4)


def test_hinge_d_loss_on_hand_made_logits():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 0.5, 3.0])
    # relu(1 - real) = [0, 0.5, 2], relu(1 + fake) = [0, 1, 1.5, 4]
    expected = 0.5 * (2.5 / 3 + 6.5 / 4)
    assert hinge_d_loss(real, fake).item() == pytest.approx(expected)
    # A confident, correct discriminator (real >= 1, fake <= -1) has zero loss.
    assert hinge_d_loss(torch.tensor([1.0, 5.0]), torch.tensor([-1.0, -3.0])).item() == 0.0


def test_patchgan_gives_a_grid_of_logits_per_image():
    torch.manual_seed(0)
    disc = PatchGAN(channels=8, layers=3)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    logits = disc(x)
    # 64 -> 32 -> 16 -> 8 (stride 2) -> 7 -> 6 (stride 1, kernel 4): the pix2pix 70x70 PatchGAN layout
    assert logits.shape == (3, 1, 6, 6)
    # GroupNorm, not BatchNorm: an image's logits do not depend on the rest of the batch.
    torch.testing.assert_close(disc(x[:1]), logits[:1], atol=1e-5, rtol=1e-5)


def test_reconstruction_loss_values():
    x = torch.zeros(1, 3, 2, 2)
    x_rec = torch.zeros(1, 3, 2, 2)
    x_rec[0, 0, 0, 0], x_rec[0, 1, 1, 1] = 1.0, -2.0  # 12 pixels
    assert reconstruction_loss(x, x_rec, "l1").item() == pytest.approx(3.0 / 12)
    assert reconstruction_loss(x, x_rec, "l2").item() == pytest.approx(5.0 / 12)
    with pytest.raises(ValueError, match="unknown tokenizer.rec_loss 'l3'.*l1 or l2"):
        reconstruction_loss(x, x_rec, "l3")
