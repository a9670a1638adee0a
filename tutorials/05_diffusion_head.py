"""Tutorial 05: MAR's diffusion head on its own, learning a labelled 2-D toy.

    python tutorials/05_diffusion_head.py [--out DIR]

MAR (Li et al. 2024) replaces the softmax over a codebook with a tiny diffusion model per token: given the
transformer's condition vector z, a residual MLP learns p(x | z) for a continuous token x. Here x is a 2-D point,
z a learned embedding of one of four labels, and the head is `minimuse.generators.diffusion.DiffusionHead`, the
very module MAR uses. Read it top to bottom like a notebook; a plot lands in DIR (default runs/tutorials/05).
It trains in well under a minute on one CPU core.
"""
import argparse
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from minimuse.generators.diffusion import DiffusionHead, alpha_bars, cosine_betas, q_sample  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="runs/tutorials/05", help="folder for diffusion_head.png")
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)  # the toy's matmuls are tiny: more threads only wait on each other

# =========================================================================================================
# 1. The forward process: how much signal is left at step t
# =========================================================================================================
# Diffusion destroys data in T small steps, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4).
# The cosine schedule (Improved DDPM eq. 17) keeps alpha_bar near 1 for longer than a linear one, so the early
# steps, where fine detail lives, are not wasted on already-noisy data.
alpha_bar = alpha_bars(cosine_betas(1000)).float()
print("1. Signal left, sqrt(alpha_bar_t), at a few of the 1000 training steps:")
print("   " + "  ".join(f"t={t}: {alpha_bar[t].sqrt():.2f}" for t in (0, 250, 500, 750, 999)))

# =========================================================================================================
# 2. The data: four labelled Gaussians, and a "no label" for guidance
# =========================================================================================================
CENTRES = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])   # label k -> a blob at centre k
STD, NULL = 0.1, len(CENTRES)                                                  # label 4 = no label


def batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, len(CENTRES), (n,), generator=generator)
    return CENTRES[labels] + STD * torch.randn(n, 2, generator=generator), labels


x0, labels = batch(4, torch.Generator().manual_seed(0))
noisy = q_sample(x0, torch.full((4,), 500), torch.randn(4, 2, generator=torch.Generator().manual_seed(1)), alpha_bar)
print("\n2. Four points and their state halfway through the forward process (t = 500):")
for a, b, k in zip(x0, noisy, labels):
    print(f"   label {k}: x_0 = ({a[0]:+.2f}, {a[1]:+.2f})  ->  x_500 = ({b[0]:+.2f}, {b[1]:+.2f})")

# =========================================================================================================
# 3. Training: predict the noise (epsilon), MAR's Diffusion Loss
# =========================================================================================================
# The head sees x_t, t and z and predicts eps; the loss is ||eps - eps_theta(x_t, t, z)||^2 (DDPM eq. 14, MAR
# eq. 1). In MAR, z comes from the transformer; here it is a label embedding. One label in ten is replaced by
# the null label, so the same head also learns p(x) and classifier-free guidance works (section 5).
torch.manual_seed(0)
generator = torch.Generator().manual_seed(0)
embed = nn.Embedding(NULL + 1, 32)
head = DiffusionHead(token_dim=2, cond_dim=32, width=128, depth=3, num_sample_steps=100, batch_mul=4)
optimizer = torch.optim.AdamW([*head.parameters(), *embed.parameters()], lr=2e-3, weight_decay=0.0)
steps = 500
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)  # a decaying rate sharpens eps at high noise
for step in range(steps):
    x, y = batch(128, generator)
    y = y.masked_fill(torch.rand(128, generator=generator) < 0.1, NULL)
    loss = head.loss(x, embed(y))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    if step % 100 == 0 or step == steps - 1:
        print(("\n3. Training the head: eps-prediction loss\n" if step == 0 else "") + f"   step {step:3d}: {loss:.3f}")
head.eval()

# =========================================================================================================
# 4. Sampling: 100 respaced reverse steps, with a temperature
# =========================================================================================================
# Sampling runs the reverse process over 100 of the 1000 steps (Improved DDPM §4). MAR's temperature tau scales
# the noise added at each reverse step: tau < 1 draws points closer to the mode of each blob.
x, y = batch(2000, torch.Generator().manual_seed(1))
with torch.no_grad():
    z = embed(y)
    samples = {tau: head.sample(z, temperature=tau, generator=torch.Generator().manual_seed(2)) for tau in (1.0, 0.3)}
    unlabelled = head.sample(embed(torch.full_like(y, NULL)), generator=torch.Generator().manual_seed(2))
print("\n4. Spread of the samples around their label's centre (the data's std is 0.10):")
for tau, s in samples.items():
    print(f"   temperature {tau}: std {(s - CENTRES[y]).std(0).mean():.3f}")

# =========================================================================================================
# 5. Classifier-free guidance on eps
# =========================================================================================================
# With the null label's eps as the unconditional branch, eps = (1 + s) eps_cond - s eps_uncond pushes samples
# away from "any blob" towards "this blob" (Ho & Salimans 2022).
with torch.no_grad():
    guided = head.sample(z, guidance=2.0, z_uncond=embed(torch.full_like(y, NULL)),
                         generator=torch.Generator().manual_seed(2))
print("\n5. Guidance on eps: spread around the label's centre")
for name, s in (("no guidance", samples[1.0]), ("guidance 2", guided)):
    print(f"   {name}: std {(s - CENTRES[y]).std(0).mean():.3f}")

fig, axes = plt.subplots(1, 4, figsize=(15, 4), sharex=True, sharey=True)
panels = [("data", x, y), ("samples given the label", samples[1.0], y),
          ("temperature 0.3", samples[0.3], y), ("samples, null label", unlabelled, None)]
for ax, (title, points, colour) in zip(axes, panels):
    ax.scatter(points[:, 0], points[:, 1], s=2, c="tab:gray" if colour is None else plt.cm.tab10(colour.numpy()))
    ax.set(title=title, xlim=(-2, 2), ylim=(-2, 2), aspect="equal")
fig.tight_layout()
fig.savefig(out / "diffusion_head.png", dpi=100)
print(f"\nsaved {out / 'diffusion_head.png'}")

# =========================================================================================================
# Try this
# =========================================================================================================
# 1. Sample with num_sample_steps=10 (build a new DiffusionHead and load the trained state dict): how does the
#    spread in section 4 change, and why do coarse steps shrink it (see the docstring of diffusion.py)?
# 2. Set the label-dropout probability to 0 and retrain: what do the null-label samples look like now?
# 3. Push guidance to 10: what happens to the spread, and to the points that started far out in the tail?
