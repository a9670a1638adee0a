"""Tutorial 01: how MaskGIT / Muse decode a whole image in a handful of forward passes.

    python tutorials/01_masked_decoding.py [--out DIR]

Read it top to bottom like a notebook: each section prints what it computes, and two plots land in DIR
(default runs/tutorials/01). No trained checkpoint is needed: the model in section 3 is a ten-line toy, and
every step of the decoding is the package's own code (`minimuse.masking`, `minimuse.conditioning`,
`minimuse.generators.parallel_decode`).
It runs in a few seconds on one CPU core.
"""
import argparse
import math
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minimuse.conditioning import cfg_mix, guidance_at  # noqa: E402
from minimuse.config import SamplerConfig  # noqa: E402
from minimuse.generators.parallel_decode import parallel_decode  # noqa: E402
from minimuse.masking import SCHEDULES, num_masked_after, sample_mask_rates  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="runs/tutorials/01", help="folder for schedules.png and mask_rates.png")
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# =========================================================================================================
# 1. The mask schedule: how many tokens are still masked after each step
# =========================================================================================================
# An image is a grid of N tokens. Decoding starts with all N set to [MASK] and, over T steps, fills them in.
# A schedule gamma maps "fraction of the steps done" x in [0, 1] to "fraction of tokens still masked":
# gamma(0) = 1, gamma(1) = 0. After step t (0-based), floor(N * gamma((t+1)/T)) tokens stay masked.
# The cosine schedule commits to only a few tokens early, when the model has seen nothing but [MASK] and
# knows little, and fills in many late, when most of the image is there to condition on.
T, N = 8, 64
print(f"1. Mask schedules: tokens still masked after each step (N = {N} tokens, T = {T} steps)")
print(f"{'step':>6}{'cosine':>9}{'linear':>9}")
still_masked = {name: [N] for name in ("cosine", "linear")}          # counts before step 1, after step 1, ...
for t in range(T):
    for name, counts in still_masked.items():
        counts.append(num_masked_after(t, T, torch.tensor([N]), torch.tensor([counts[-1]]), name).item())
    print(f"{t + 1:>6}{still_masked['cosine'][-1]:>9}{still_masked['linear'][-1]:>9}")
decoded = {name: [a - b for a, b in zip(counts, counts[1:])] for name, counts in still_masked.items()}
print(f"tokens decoded per step: cosine {decoded['cosine']}, linear {decoded['linear']}\n")

x = torch.linspace(0, 1, 201).tolist()
fig, ax = plt.subplots(figsize=(5, 3.6))
for name, gamma in SCHEDULES.items():
    ax.plot(x, [gamma(v) for v in x], label=name, lw=2.5 if name == "cosine" else 1.2)
steps_x = [(t + 1) / T for t in range(T)]
ax.plot(steps_x, [n / N for n in still_masked["cosine"][1:]], "o", color="C0", ms=4,
        label=f"cosine, T = {T}, N = {N}")
ax.set(xlabel="fraction of steps done, x = t / T", ylabel="fraction still masked, gamma(x)",
       title="Mask schedules (minimuse.masking.SCHEDULES)")
ax.legend(fontsize="small")
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out / "schedules.png", dpi=120)
plt.close(fig)
print(f"   saved {out / 'schedules.png'}\n")

# =========================================================================================================
# 2. Training sees the same masking rates that sampling will produce
# =========================================================================================================
# In training, each example gets a masking rate r = gamma(u) = cos(pi/2 * u) with u ~ U(0, 1): the fraction of
# tokens replaced by [MASK] before the model is asked to predict them. Because the cosine is flat near u = 0,
# rates near 1 are common: r has density p(r) = 2/pi * (1 - r^2)^(-1/2), mean 2/pi ~ 0.64. The model gets
# plenty of practice at the hard early steps of sampling, where almost everything is masked.
rates = sample_mask_rates(100_000, torch.Generator().manual_seed(0))
print("2. Training masking rates r = cos(pi/2 * u)")
print(f"   mean r = {rates.mean():.3f}  (2/pi = {2 / math.pi:.3f});  "
      f"r > 0.5 for {(rates > 0.5).float().mean():.0%} of examples (a uniform rate would give 50%)")

r = torch.linspace(0, 0.995, 400)
fig, ax = plt.subplots(figsize=(5, 3.6))
ax.hist(rates.numpy(), bins=50, range=(0, 1), density=True, alpha=0.6, label="sample_mask_rates (100k draws)")
ax.plot(r, 2 / math.pi / torch.sqrt(1 - r ** 2), "k", lw=1.5, label=r"$p(r) = \frac{2}{\pi}(1 - r^2)^{-1/2}$")
ax.axvline(2 / math.pi, color="C3", ls="--", lw=1, label=f"mean 2/pi = {2 / math.pi:.2f}")
ax.set(xlabel="masking rate r", ylabel="density", ylim=(0, 5), title="Training masking rates")
ax.legend(loc="upper left")
fig.tight_layout()
fig.savefig(out / "mask_rates.png", dpi=120)
plt.close(fig)
print(f"   saved {out / 'mask_rates.png'}\n")

# =========================================================================================================
# 3. Decoding, step by step, with a toy model
# =========================================================================================================
# The decoder only needs a function that maps (token ids (B, L), guidance scale s) to logits (B, L, K), and
# the [MASK] id. Our toy model "knows" one picture: a 4x4 square of token 1 in the middle of an 8x8 grid of
# token 0. It is sure about the square's centre and the far background, and unsure along the square's edge.
# A real transformer also looks at the tokens already decoded; this one ignores them, which is enough to
# watch the sampler work. Labels: class 0 = "square"; the null class 1 = "no class" (used by guidance in
# section 4) knows nothing and gives flat logits.
MASK_ID, NULL_CLASS = 2, 1                                         # [MASK] and null ids sit above the real ones


def toy_logits(ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ids (B, 64), labels (B,) -> logits (B, 64, 2) of tokens 0 and 1."""
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    dist = torch.maximum((rows - 3.5).abs(), (cols - 3.5).abs()).flatten()       # 0.5 at the centre .. 3.5
    logit_one = 6.0 * (2.0 - dist)                                                 # > 0 inside the square
    cond = torch.stack([torch.zeros_like(logit_one), logit_one], dim=-1)          # (L, K)
    is_null = (labels == NULL_CLASS)[:, None, None]                               # (B, 1, 1)
    return torch.where(is_null, torch.zeros_like(cond), cond).expand(len(ids), -1, -1)


def guided(labels: torch.Tensor):
    """The decoder's logits function for these labels: conditional logits mixed with the null class's (section 4),
    as a generator's `guided_logits` does."""
    def logits_fn(ids: torch.Tensor, scale: float) -> torch.Tensor:
        cond = toy_logits(ids, labels)
        return cond if scale == 0 else cfg_mix(cond, toy_logits(ids, torch.full_like(labels, NULL_CLASS)), scale)
    return logits_fn


def canvas_lines(ids: torch.Tensor, masked: torch.Tensor) -> list[str]:
    """(h, w) tokens and mask -> one string per row: '.' for [MASK], the token id otherwise."""
    return ["".join("." if m else str(int(i)) for i, m in zip(row_ids, row_m)) for row_ids, row_m in zip(ids, masked)]


labels = torch.tensor([0])                                         # one sample of class 0
history = []                                                       # parallel_decode appends (ids, masked) per step
blank = torch.full((1, 8, 8), MASK_ID)                             # the canvas: every token masked
plain = SamplerConfig(steps=T, guidance=0.0)                       # MaskGIT's sampler, no guidance yet
tokens = parallel_decode(guided(labels), blank, MASK_ID, plain, generator=torch.Generator().manual_seed(0),
                         history=history)

# Each step samples a token at every masked position, scores it by its log-probability plus Gumbel noise
# (the noise shrinks to 0 by the last step), keeps the schedule's number of least confident positions masked
# and locks in the rest: a decoded token is never changed again. The counts are section 1's cosine column.
# A token sampled against the odds has a low log-probability, so it is usually re-masked and drawn again at
# a later step; but while the noise is large one can slip through, and then it stays (section 4 helps).
print(f"3. Decoding an 8x8 canvas in {T} steps ('.' = [MASK], digits = decoded tokens)")
before = 64
for t, (ids, masked) in enumerate(history):
    left = int(masked.sum())
    print(f"   after step {t + 1}/{T}: {before - left} tokens locked in, {left} still masked")
    for line in canvas_lines(ids[0], masked[0]):
        print("      " + line)
    before = left
assert not (tokens == MASK_ID).any()                               # the result (B, h, w) has no [MASK] left
print()

# =========================================================================================================
# 4. Classifier-free guidance, ramped over the steps
# =========================================================================================================
# With guidance the model runs twice per step, with the class and with the null class, and the logits are
# pushed away from the unconditional ones (Muse §2.7): l = (1 + s) * l_cond - s * l_uncond.
# Muse ramps s from 0 at the first step to its full value at the last: the few tokens chosen early, which set
# the layout, stay diverse; the many tokens chosen late, which fill in the details, get sharpened.
s = 3.0
print(f"4. Classifier-free guidance: scale per step for s = {s}")
print(f"{'step':>6}{'linear ramp':>13}{'constant':>10}")
for t in range(T):
    print(f"{t + 1:>6}{guidance_at(t, T, s, 'linear'):>13.2f}{guidance_at(t, T, s, 'constant'):>10.2f}")

# (Where the ramp gives s = 0, the sampler skips the unconditional pass: step 1 costs one forward, not two.)
# What guidance does to one position on the square's edge, where the toy model is unsure. The toy's null class
# is flat, so here guidance simply sharpens the class's own prediction; a trained model's unconditional logits
# carry "what any image looks like", and guidance also pushes away from that.
edge = 3 * 8 + 5                                                   # row 3, column 5: inside, next to the edge
cond, uncond = toy_logits(torch.zeros(2, 64, dtype=torch.long), torch.tensor([0, NULL_CLASS])).chunk(2)
for scale in (0.0, 1.0, 3.0):
    p = cfg_mix(cond, uncond, scale)[0, edge].softmax(-1)[1]
    print(f"   s = {scale}: p(token 1) at the square's edge = {p:.3f}")

# And on whole samples: count the tokens that differ from the toy's intended square, with and without guidance.
square = (toy_logits(torch.zeros(1, 64, dtype=torch.long), labels)[0].argmax(-1)).view(8, 8)
for scale in (0.0, s):
    many = parallel_decode(guided(torch.zeros(64, dtype=torch.long)), blank.expand(64, -1, -1), MASK_ID,
                           SamplerConfig(steps=T, guidance=scale), generator=torch.Generator().manual_seed(1))
    wrong = (many != square).flatten(1).sum(1).float()
    print(f"   guidance {scale}: {wrong.mean():.2f} of 64 tokens off the square per sample (64 samples)")

print("\nTo watch the same decoding on a trained model (train it first with `python train.py --preset tiny`):")
print('   python sample.py --ckpt runs/tiny --class "red square" --steps 8 --filmstrip --out red.png')
print("and open red_filmstrip.png: one column per step, still-masked tokens darkened.")
