"""Tests for the MAR diffusion head (minimuse.generators.diffusion): the cosine schedule, q_sample and respacing
pinned exactly, the AdaLN-Zero start, and the head trained on a labelled 2-D toy (learning, determinism,
temperature, guidance)."""
import math

import pytest
import torch
from torch import nn

from minimuse.generators.diffusion import (X0_CLIP, DiffusionHead, MLPResBlock, alpha_bars, cosine_alpha_bar,
                                           cosine_betas, q_sample, respace)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These matmuls are tiny: one thread is as fast as two on an idle machine and ~10x faster on a busy one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def robust_spread(x: torch.Tensor) -> torch.Tensor:
    """Per-dimension std estimate from the median absolute deviation, blind to the few tail samples
    the toy section below describes. x (N, C) -> (C,)."""
    return 1.4826 * (x - x.median(dim=0).values).abs().median(dim=0).values


def sample(head: DiffusionHead, z: torch.Tensor, seed: int, **kwargs) -> torch.Tensor:
    return head.sample(z, generator=torch.Generator().manual_seed(seed), **kwargs)


# ----------------------------------------------------------------------------------------------------
# Schedule math


def test_cosine_alpha_bar_matches_closed_form_and_decreases():
    s = 0.008
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    # Eq. 17 through the double-angle identity cos^2(a) = (1 + cos(2a)) / 2, so not the code's own expression.
    expected = (1 + torch.cos(math.pi * (t + s) / (1 + s))) / (1 + math.cos(math.pi * s / (1 + s)))
    torch.testing.assert_close(cosine_alpha_bar(t), expected)
    assert cosine_alpha_bar(t)[0] == 1 and cosine_alpha_bar(t)[-1] < 1e-12

    betas = cosine_betas(1000)
    assert betas.shape == (1000,) and betas.min() > 0
    assert betas[-1] == 0.999 and (betas[:-1] < 0.999).all()  # only the singular last step is clipped
    # prod(1 - beta) telescopes back to the closed form up to the clipped step.
    alpha_bar = alpha_bars(betas)
    t = torch.arange(1, 1000, dtype=torch.float64) / 1000
    torch.testing.assert_close(alpha_bar[:-1], cosine_alpha_bar(t))
    assert (alpha_bar.diff() < 0).all() and alpha_bar[0] < 1 and alpha_bar[-1] > 0


def test_q_sample_matches_mean_and_variance():
    alpha_bar = alpha_bars(cosine_betas(1000)).float()
    g = torch.Generator().manual_seed(0)
    n = 100_000
    x0 = torch.tensor([1.5, -0.5]).expand(2 * n, 2)
    t = torch.tensor([100, 900]).repeat(n)  # interleaved, so a wrong broadcast over rows shows up
    x_t = q_sample(x0, t, torch.randn(2 * n, 2, generator=g), alpha_bar)
    for step, rows in ((100, x_t[0::2]), (900, x_t[1::2])):
        a = alpha_bar[step]
        torch.testing.assert_close(rows.mean(0), a.sqrt() * x0[0], atol=0.01, rtol=0)
        torch.testing.assert_close(rows.var(0), (1 - a).expand(2), atol=0.01, rtol=0)


@pytest.mark.parametrize("n", [2, 7, 100, 1000])
def test_respace_keeps_end_points_and_a_subset_of_alpha_bars(n):
    alpha_bar = alpha_bars(cosine_betas(1000))
    timesteps, betas = respace(alpha_bar, n)
    assert timesteps.shape == betas.shape == (n,)
    assert timesteps[0] == 0 and timesteps[-1] == 999 and (timesteps.diff() > 0).all()
    kept = alpha_bars(betas)  # the recomputed betas give back exactly the kept alpha_bars
    torch.testing.assert_close(kept, alpha_bar[timesteps])
    torch.testing.assert_close(kept[[0, -1]], alpha_bar[[0, -1]])
    if n == 1000:
        torch.testing.assert_close(betas, cosine_betas(1000))


@pytest.mark.parametrize("n", [0, 1, 1001])
def test_respace_rejects_impossible_step_counts(n):
    with pytest.raises(ValueError, match="num_steps"):
        respace(alpha_bars(cosine_betas(1000)), n)


def test_head_clips_only_the_first_reverse_step():
    head = DiffusionHead(token_dim=2, cond_dim=4, width=8, depth=1, num_sample_steps=100, batch_mul=4)
    _, betas = respace(alpha_bars(cosine_betas(1000)), 100)
    assert betas[-1] > 0.9999 and head.sample_betas[-1] == pytest.approx(0.999)
    torch.testing.assert_close(head.sample_betas[:-1], betas[:-1].float())


class GaussianDenoiser(torch.nn.Module):
    """The exact eps_theta for 1-D data x0 ~ N(mu, sigma^2): E[eps | x_t] in closed form. Ignores z."""

    def __init__(self, alpha_bar: torch.Tensor, mu: float, sigma: float):
        super().__init__()
        self.alpha_bar, self.mu, self.sigma = alpha_bar, mu, sigma

    def forward(self, x_t, t, z):
        a = self.alpha_bar[t].unsqueeze(-1)  # (N, 1)
        return (1 - a).sqrt() * (x_t - a.sqrt() * self.mu) / (a * self.sigma**2 + 1 - a)


@pytest.mark.parametrize("steps, low, high", [(1000, 0.95, 1.02), (100, 0.80, 0.95)])
def test_sampler_with_the_exact_denoiser_recovers_the_gaussian(steps, low, high):
    # The sampler alone, no training: mean exact; std slightly low with coarse steps, as the module docstring says.
    head = DiffusionHead(token_dim=1, cond_dim=1, width=8, depth=1, num_sample_steps=steps, batch_mul=4)
    head.net = GaussianDenoiser(head.alpha_bar, mu=1.0, sigma=0.1)
    x = sample(head, torch.zeros(20_000, 1), seed=0)
    assert x.mean().item() == pytest.approx(1.0, abs=0.005)
    assert low < x.std().item() / 0.1 < high


# ----------------------------------------------------------------------------------------------------
# The network and the loss


def test_adaln_modulations_start_at_zero():
    torch.manual_seed(0)
    head = DiffusionHead(token_dim=3, cond_dim=5, width=16, depth=2, num_sample_steps=100, batch_mul=4)
    x, z, t = torch.randn(64, 3), torch.randn(64, 5), torch.randint(0, 1000, (64,))
    assert torch.equal(head.net(x, t, z), torch.zeros(64, 3))
    block = MLPResBlock(16)
    h, c = torch.randn(8, 16), torch.randn(8, 16)
    assert torch.equal(block(h, c), h)
    # eps_theta = 0 at the start, so L_simple is the mean of eps^2 (about 1 over 64 * 4 * 3 draws).
    assert head.loss(x, z).item() == pytest.approx(1.0, abs=0.15)


def test_loss_repeats_each_token_batch_mul_times():
    head = DiffusionHead(token_dim=3, cond_dim=5, width=16, depth=1, num_sample_steps=100, batch_mul=4)
    seen = []
    head.net.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    loss = head.loss(torch.randn(10, 3), torch.randn(10, 5))
    assert seen == [(40, 3)] and loss.shape == ()


# ----------------------------------------------------------------------------------------------------
# The head trained on a 2-D toy (one short training shared by the tests below): label k in [0, 4) -> a Gaussian
# at centre k, label 4 = no label. Known tail: the final LayerNorm bounds |eps_theta|, so an x_T far out in the
# tail (|x_T| > ~3.5 in 2-D, ~0.2%) cannot be pulled back at high noise and drifts away; a short training leaves
# well under 1% of samples so.

TOY_CENTRES = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])  # (K, 2)
TOY_STD = 0.1
NULL_LABEL = len(TOY_CENTRES)


def train_toy(steps: int = 500, batch: int = 128, drop_label: float = 0.1) -> tuple[DiffusionHead, nn.Embedding]:
    """A small head whose z is a learned label embedding; labels become NULL_LABEL with probability `drop_label`,
    so the same model also samples without a label (the unconditional branch of guidance)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    embed = nn.Embedding(NULL_LABEL + 1, 32)
    head = DiffusionHead(token_dim=2, cond_dim=32, width=128, depth=3, num_sample_steps=100, batch_mul=4)
    optimizer = torch.optim.AdamW([*head.parameters(), *embed.parameters()], lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)   # sharpens eps at high noise
    for _ in range(steps):
        labels = torch.randint(0, len(TOY_CENTRES), (batch,), generator=generator)
        x = TOY_CENTRES[labels] + TOY_STD * torch.randn(batch, 2, generator=generator)
        labels = labels.masked_fill(torch.rand(batch, generator=generator) < drop_label, NULL_LABEL)
        loss = head.loss(x, embed(labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return head.eval(), embed


@pytest.fixture(scope="module")
def toy():
    head, embed = train_toy()
    labels = torch.arange(len(TOY_CENTRES)).repeat_interleave(500)  # (2000,)
    with torch.no_grad():
        return head, labels, embed(labels), embed(torch.full_like(labels, NULL_LABEL))


def test_head_learns_the_labelled_mixture(toy):
    head, labels, z, _ = toy
    x = sample(head, z, seed=0)
    assert x.shape == (2000, 2)
    for k, centre in enumerate(TOY_CENTRES):
        xk = x[labels == k]
        assert (xk.median(dim=0).values - centre).abs().max() < 0.15
        ratio = robust_spread(xk) / TOY_STD
        assert ((ratio > 1 / 1.5) & (ratio < 1.5)).all(), ratio
    far = (x - TOY_CENTRES[labels]).norm(dim=-1) > 1
    assert far.float().mean() < 0.02  # the documented tail, and nothing more


def test_same_seed_same_samples(toy):
    head, _, z, _ = toy
    assert torch.equal(sample(head, z[:8], seed=3), sample(head, z[:8], seed=3))
    assert not torch.allclose(sample(head, z[:8], seed=3), sample(head, z[:8], seed=4))


def test_temperature_zero_shrinks_the_spread(toy):
    head, labels, z, _ = toy
    z0 = z[labels == 0]
    cold = robust_spread(sample(head, z0, seed=0, temperature=0.0))
    warm = robust_spread(sample(head, z0, seed=0, temperature=1.0))
    assert (cold < 0.25 * warm).all(), (cold, warm)


def test_guidance_zero_with_unconditional_branch_equals_conditional_sample(toy):
    head, _, z, z_null = toy
    z, z_null = z[::5], z_null[::5]  # (400, D): 100 per label
    conditional = sample(head, z, seed=0)
    torch.testing.assert_close(sample(head, z, seed=0, guidance=0.0, z_uncond=z_null), conditional)
    guided = sample(head, z, seed=0, guidance=3.0, z_uncond=z_null)
    assert guided.shape == conditional.shape and not torch.allclose(guided, conditional)
    with pytest.raises(ValueError, match="z_uncond"):
        head.sample(z, guidance=1.0)


def test_a_wild_eps_cannot_blow_samples_up():
    """x0 implied by eps is clipped at every step, so even a badly wrong denoiser gives bounded tokens (without
    the clip, the first respaced step alone multiplies eps errors by ~30)."""
    torch.manual_seed(0)
    head = DiffusionHead(token_dim=4, cond_dim=3, width=16, depth=1, num_sample_steps=100, batch_mul=1)
    torch.nn.init.normal_(head.net.out.weight, std=10.0)             # eps_theta far from any real noise
    torch.nn.init.normal_(head.net.final_ada[1].weight, std=1.0)
    x = head.sample(torch.randn(64, 3), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all() and x.abs().max() <= X0_CLIP + 1e-5
