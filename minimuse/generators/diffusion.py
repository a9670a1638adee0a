"""MAR diffusion head: a small AdaLN residual MLP that models p(x | z) for one continuous token.

MAR (Li et al. 2024, "Autoregressive Image Generation without Vector Quantization", §3.2) replaces the
token softmax with a diffusion model per token: the transformer gives a condition vector z (N, D), and this
head learns the distribution of the continuous token x (N, C) given z with the Diffusion Loss (§3.2, eq. 1).

The Gaussian diffusion is written here, small on purpose:
  - cosine noise schedule, Improved DDPM (Nichol & Dhariwal 2021) eq. 17, betas clipped at 0.999;
  - epsilon prediction trained with L_simple, DDPM (Ho et al. 2020) eq. 14, on uniformly random timesteps;
  - sampling respaced to fewer steps (Improved DDPM §4; its first reverse step clipped like the training
    betas, see DiffusionHead.__init__) with the fixed posterior variance sigma^2 = beta~ (DDPM §3.2).
    MAR learns the variance (Improved DDPM §3.1); we leave that out and pay with coarse steps: given the
    exact denoiser, a narrow Gaussian comes out somewhat too narrow at 100 steps, nearly right at 1000
    (tests/test_diffusion.py pins how much);
  - MAR's temperature tau multiplies the std of the sampling noise (MAR §3.2, "Sampler");
  - classifier-free guidance mixes eps with `conditioning.cfg_mix` (Ho & Salimans 2022).

Deliberate deviations from MAR's head: the variance is fixed, not learned (above), and every reverse step clips
the x0 implied by eps to +-X0_CLIP standard deviations (guided-diffusion's clip_denoised) where MAR clips nothing:
with a fixed variance and few steps, one bad eps at high noise would otherwise carry through to the token.
tutorials/05_diffusion_head.py trains the head alone on a 2-D toy.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from minimuse.conditioning import cfg_mix
from minimuse.layers import modulate

# ----------------------------------------------------------------------------------------------------
# Schedule math: small pure functions (the schedules in float64).


def cosine_alpha_bar(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Improved DDPM eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t + s) / (1 + s) * pi / 2), t in [0, 1]."""
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f / math.cos(s / (1 + s) * math.pi / 2) ** 2


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """(T,) betas with beta_t = 1 - alpha_bar(t / T) / alpha_bar((t - 1) / T), clipped at 0.999 so the last step
    is not a pure-noise singularity (Improved DDPM §3.2)."""
    alpha_bar = cosine_alpha_bar(torch.arange(num_steps + 1, dtype=torch.float64) / num_steps)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def alpha_bars(betas: torch.Tensor) -> torch.Tensor:
    """(T,) alpha_bar_t = prod_{s <= t} (1 - beta_s), DDPM §2."""
    return torch.cumprod(1 - betas, dim=0)


def respace(alpha_bar: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Improved DDPM §4: keep `num_steps` evenly spaced timesteps of the (T,) schedule, first and last included,
    and recompute betas from the kept alpha_bars, beta'_i = 1 - alpha_bar_{t_i} / alpha_bar_{t_{i-1}}.

    Returns (timesteps (S,) long, betas (S,)); alpha_bars(betas) equals alpha_bar[timesteps].
    """
    if not 2 <= num_steps <= len(alpha_bar):
        raise ValueError(f"num_steps must be in [2, {len(alpha_bar)}] to keep both end points, got {num_steps}")
    timesteps = torch.linspace(0, len(alpha_bar) - 1, num_steps, dtype=torch.float64).round().long()
    kept = alpha_bar[timesteps]
    previous = torch.cat([kept.new_ones(1), kept[:-1]])
    return timesteps, 1 - kept / previous


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """DDPM eq. 4: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps. x0, noise (N, C); t (N,) long."""
    a = alpha_bar[t].to(x0.dtype).unsqueeze(-1)  # (N, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (N,) timesteps -> (N, dim), Transformer §3.5 as used by DDPM (Appendix B)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)  # (dim/2,)
    angles = t.float().unsqueeze(-1) * freqs  # (N, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


# ----------------------------------------------------------------------------------------------------
# The denoiser: residual MLP with AdaLN-Zero (DiT, Peebles & Xie 2023, §3.2), conditioned on t and z.


class MLPResBlock(nn.Module):
    """h + gate * MLP(AdaLN(LayerNorm(h))), MLP = Linear -> SiLU -> Linear. The modulation is zero-initialised,
    so a fresh block is the identity (DiT's adaLN-Zero)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """h, c (N, W) -> (N, W)."""
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        return h + gate * self.mlp(modulate(self.norm(h), shift, scale))


class DenoiserMLP(nn.Module):
    """eps_theta(x_t, t, z): input projection of x_t, condition c = MLP(sin(t)) + Linear(z), `depth` ResBlocks,
    and a final AdaLN layer whose modulation and output projection start at zero (the output starts at 0)."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.x_proj = nn.Linear(token_dim, width)
        self.t_embed = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.z_proj = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(MLPResBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, token_dim)
        for layer in (self.final_ada[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x_t (N, C), t (N,) long in [0, T), z (N, D) -> predicted eps (N, C)."""
        c = self.t_embed(timestep_embedding(t, self.freq_dim).to(x_t.dtype)) + self.z_proj(z)  # (N, W)
        h = self.x_proj(x_t)  # (N, W)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.out(modulate(self.final_norm(h), shift, scale))


# ----------------------------------------------------------------------------------------------------
# The head: denoiser + schedule, with MAR's training loss and respaced, tempered, guided sampling.


# Tokens reach the head scaled to unit variance (the tokenizer's measured scale), so a predicted x0 beyond this
# many standard deviations is an error, not data.
X0_CLIP = 5.0


class DiffusionHead(nn.Module):
    """Models p(x | z) per token with a DDPM (MAR §3.2): `depth` blocks of `width`, 1000 training steps,
    `num_sample_steps` respaced sampling steps; each token is repeated `batch_mul` times per training step (MAR's
    `diffusion_batch_mul`), so one transformer pass pays for several noise draws. The sizes and step counts
    come from `DiffusionHeadConfig`, their one home; MAR itself uses width 1024, depth 3, 100 steps, 4."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, num_sample_steps: int,
                 batch_mul: int, num_train_steps: int = 1000):
        super().__init__()
        self.net = DenoiserMLP(token_dim, cond_dim, width, depth)
        self.token_dim = token_dim
        self.batch_mul = batch_mul
        betas = cosine_betas(num_train_steps)
        timesteps, sample_betas = respace(alpha_bars(betas), num_sample_steps)
        # Respaced to 100 steps, the first reverse step has beta' = 1 - 1e-5 and multiplies the eps error by
        # 1 / sqrt(1 - beta') ~ 300 (DDPM eq. 11). The training schedule's clip (Improved DDPM §3.2) brings it
        # back to ~30, as in the 1000-step sampler; every other step is unchanged.
        sample_betas = sample_betas.clamp(max=betas.max().item())
        # Derived from the step counts, so kept out of the state dict: checkpoints hold only weights.
        self.register_buffer("alpha_bar", alpha_bars(betas).float(), persistent=False)  # (T,)
        self.register_buffer("sample_timesteps", timesteps, persistent=False)  # (S,) original t of each step
        self.register_buffer("sample_betas", sample_betas.float(), persistent=False)  # (S,)
        self.register_buffer("sample_alpha_bar", alpha_bars(sample_betas).float(), persistent=False)  # (S,)

    def loss(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """MAR §3.2 eq. 1 = DDPM eq. 14 (L_simple): mean ||eps - eps_theta(x_t, t, z)||^2 over uniform t, for
        x (N, C), z (N, D). The caller picks the tokens that count (MAR: the masked ones) by passing only those."""
        x, z = x.repeat(self.batch_mul, 1), z.repeat(self.batch_mul, 1)  # (kN, C), (kN, D)
        t = torch.randint(0, len(self.alpha_bar), (x.shape[0],), device=x.device)
        noise = torch.randn_like(x)
        return F.mse_loss(self.net(q_sample(x, t, noise, self.alpha_bar), t, z), noise)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, temperature: float = 1.0, guidance: float = 0.0,
               generator: torch.Generator | None = None, z_uncond: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling over the respaced steps, z (N, D) -> x (N, C) (MAR §3.2 eq. 2): the mean is DDPM
        eq. 7 with the x0 implied by eps, clipped to +-X0_CLIP; the variance beta~_i = beta'_i (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i) (DDPM §3.2), and the
        noise std is multiplied by `temperature` (MAR's tau; 0 leaves only the randomness of x_T).

        Guidance: z_uncond (N, D) is the condition of the unconditional branch (MAR: the class-dropped one). Both
        branches share x_t and eps = cfg_mix(eps_cond, eps_uncond, guidance), so 0 gives the conditional sample.
        `generator` must live on z's device; the same generator state gives the same samples.
        """
        guided = z_uncond is not None
        if guidance != 0 and not guided:
            raise ValueError("guidance != 0 needs z_uncond, the condition of the unconditional branch")
        if guided and z_uncond.shape != z.shape:
            raise ValueError(f"z_uncond must match z's shape {tuple(z.shape)}, got {tuple(z_uncond.shape)}")
        z_in = torch.cat([z, z_uncond]) if guided else z  # (2N, D) = [cond; uncond], or (N, D)
        x = torch.randn(z.shape[0], self.token_dim, generator=generator, device=z.device, dtype=z.dtype)  # x_T
        for i in reversed(range(len(self.sample_timesteps))):
            t = self.sample_timesteps[i].expand(z_in.shape[0])  # the net sees the original timestep
            eps = self.net(torch.cat([x, x]) if guided else x, t, z_in)  # (2N or N, C)
            if guided:
                eps = cfg_mix(*eps.chunk(2), guidance)  # (N, C)
            beta, alpha_bar = self.sample_betas[i], self.sample_alpha_bar[i]
            alpha_bar_prev = self.sample_alpha_bar[i - 1] if i > 0 else torch.ones_like(alpha_bar)
            # x0 implied by eps (DDPM eq. 15), clipped: an imperfect eps_theta at high noise implies absurd x0
            # that the remaining steps cannot undo (guided-diffusion's clip_denoised, at X0_CLIP std here)
            x0 = ((x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()).clamp(-X0_CLIP, X0_CLIP)
            # mean of the posterior q(x_{t-1} | x_t, x0), DDPM eq. 7 (equal to eq. 11 when nothing is clipped)
            x = (alpha_bar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - alpha_bar_prev) * x) / (1 - alpha_bar)
            if i > 0:
                variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + temperature * variance.sqrt() * noise
        return x
