"""Question: is the generator (or its sampler) the limit, or what the tokenizer hands it? The masked generators
without a tokenizer: MaskGIT or MAR on noise-free "token Shapes".

Each Shapes image is drawn at a small resolution R and read as an R x R grid of tokens: 0 for background,
1 + colour for a shape pixel (5 ids, no colour jitter, no background noise, no VQ). The tiny preset's
generator and training recipe learn it and sample it with the preset's sampler; the attribute checker then
reads the grids (drawn as 3x-upscaled images). If accuracy stays low here too, the limit is the generator or
its sampler, not what the tokenizer hands it. With `--preset tiny-mar` the generator is MAR, and each token is
the continuous RGB of its colour (scaled to unit variance); samples are read back as the nearest colour.

Every `--eval-every` steps it prints the sample accuracy and probes on held-out grids. MaskGIT:
- how much the model reads the *shape* from the class: the masked-token NLL on and around the shape (mask rate
  0.5) given the true class, the class of the same colour and another shape, and the null class. A model that
  draws the class's shape pays clearly more with the wrong shape; one that only reads the colour pays the same.
- a calibration check: the probability the model gives the background at masked positions at least 2 tokens
  away from the shape (mask rate 0.1). Label smoothing eps caps it at 1 - eps + eps / K.
- how far its conditionals are from the exact ones (Bayes' rule over every image Shapes can draw; see
  research/oracle_sampler.py) where the answer is nearly certain: KL(exact || model) on and next to the shape, 10% of
  each grid masked. The samples lag this number; it says early whether a change helps. Next to it, how often
  the model, the exact conditionals and the best 3x3 local rule (`LocalRule`) guess those tokens right.
MAR: how much the diffusion head's samples follow their context. With 30% of each grid masked and the true
class, what share of the masked shape tokens come out in the right colour, and what share of the masked
background tokens come out as a shape colour. A head that ignores z samples near the marginal: mostly background.
With `--raster` the same MaskGIT blocks are trained as a raster-order autoregressive model instead (causal
attention, every token predicted from the ones before it) and sampled token by token. It prints the samples
only; the probes above read masked conditionals. Training runs through the project's own loop (`fit`, with the
preset's learning rate, precision and clipping) into `--out`; the last samples are saved there as a grid (one row
per class). docs/design-notes.md says what these probes showed.

    python -m research.token_shapes                                  # R = 12, 1000 steps
    python -m research.token_shapes --set generator.label_smoothing=0 --steps 2000 --eval-every 500
    python -m research.token_shapes --set generator.local_conv=false --steps 3000     # without the convolutions
    python -m research.token_shapes --preset tiny-mar --steps 1500 --eval-every 500    # MAR
    python -m research.token_shapes --raster --steps 1500 --eval-every 500             # the blocks in raster order
"""
import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from minimuse.conditioning import drop_labels
from minimuse.config import RunConfig, apply_overrides
from minimuse.data.shapes import SHAPES_CLASS_NAMES, Shapes, shape_mask
from minimuse.eval.shapes_checker import attribute_accuracy
from minimuse.generators import GENERATORS
from minimuse.generators.mar import MAR
from minimuse.generators.maskgit import MaskedTransformer
from minimuse.inference import generate
from minimuse.masking import mask_by_order, random_mask, random_orders
from minimuse.presets import get_preset
from minimuse.runtime import pick_device, seed_everything, wrap
from minimuse.train.trainer import fit
from minimuse.viz import save_grid
from research.generator_probe import label_nll
from research.oracle_sampler import PALETTE, ExactShapes  # PALETTE: token id -> colour

HELD_OUT = 500  # grids after the training ones, for the probes


def token_shapes(resolution: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n Shapes training items as token grids (n, R, R) in 0..4, and their labels (n,)."""
    dataset = Shapes(resolution, "train", size=n)
    grids, labels = [], []
    for i in range(n):
        a = dataset.attributes(i)
        grids.append(torch.from_numpy(np.where(shape_mask(a), 1 + a.colour, 0)))   # (R, R)
        labels.append(a.label)
    return torch.stack(grids).long(), torch.tensor(labels)


class TokenImages:
    """Stands in for the tokenizer. Ids (B, R, R) -> images (B, 3, 3R, 3R) in [-1, 1]. For MAR, `continuous`
    turns ids into RGB tokens (B, R, R, 3) divided by `scale` (their std, so they have unit variance, as the
    tokenizer's latents do), and `decode` reads continuous tokens as the nearest palette colour."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def continuous(self, ids: torch.Tensor) -> torch.Tensor:
        return PALETTE.to(ids.device)[ids] / self.scale

    def ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., 3) continuous tokens -> (...) id of the nearest palette colour."""
        return (tokens[..., None, :] * self.scale - PALETTE.to(tokens.device)).square().sum(-1).argmin(-1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = self.ids(tokens) if tokens.is_floating_point() else tokens
        return PALETTE.to(ids.device)[ids].permute(0, 3, 1, 2).repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)


# ---------------------------------------------------------------------------------------------------------
# The raster-order comparison: MaskedTransformer(causal=True), its forward unchanged. The [MASK] id doubles as
# a start token, so the input (start, x_0, ..., x_{L-2}) gives at position j the logits of x_j from the class
# and x_0 .. x_{j-1} (Esser et al. 2021 §3.2 order). The class reaches every position through adaLN, or, with
# class_cond=token, as a first token before the start, the way LlamaGen puts it.
# ---------------------------------------------------------------------------------------------------------

def raster_loss(model: MaskedTransformer, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over every token of grids ids (B, h, w), the class dropped to null as in
    MaskGIT's training (so both objectives see the same conditioning)."""
    targets = ids.flatten(1)                                                              # (B, L)
    inputs = torch.cat([torch.full_like(targets[:, :1], model.mask_id), targets[:, :-1]], dim=1)
    logits = model.logits(inputs, drop_labels(labels, model.cfg.cond_drop, model.null_class))  # (B, L, K)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), label_smoothing=model.cfg.label_smoothing)


@torch.no_grad()
def raster_sample(model: MaskedTransformer, labels: torch.Tensor, temperature: float, seed: int) -> torch.Tensor:
    """Token grids (B, R, R), one token per forward pass in raster order, no guidance and no KV cache: each pass
    re-reads the whole prefix, L passes in all."""
    generator = torch.Generator(labels.device).manual_seed(seed)
    ids = torch.full((len(labels), 1), model.mask_id, device=labels.device)                # (B, 1): the start
    for _ in range(model.seq_len):
        logits = model.logits(ids, labels)[:, -1].float() / temperature                    # (B, K)
        gumbel = -torch.empty_like(logits).exponential_(generator=generator).log()
        ids = torch.cat([ids, (logits + gumbel).argmax(-1, keepdim=True)], dim=1)          # Gumbel-max draw
    side = math.isqrt(model.seq_len)
    return ids[:, 1:].view(-1, side, side)


@torch.no_grad()
def far_background_probability(model, grids: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean p(background) at masked positions >= 2 tokens from any shape token, 10% of tokens masked."""
    near = F.max_pool2d((grids > 0).float()[:, None], 5, stride=1, padding=2).flatten(1) > 0   # (N, L)
    inputs, _, masked = model.mask_tokens(grids, torch.Generator(grids.device).manual_seed(0), 0.1)
    probs = model.logits(inputs, labels).softmax(-1)
    return probs[..., 0][masked & ~near].mean().item()


def near_shape(grids: torch.Tensor) -> torch.Tensor:
    """(N, R, R) -> (N, L) bool: the shape's tokens and their 8 neighbours."""
    return F.max_pool2d((grids > 0).float()[:, None], 3, stride=1, padding=1).flatten(1) > 0


@torch.no_grad()
def mar_context(model: MAR, images: TokenImages, grids: torch.Tensor, labels: torch.Tensor,
                rate: float = 0.3) -> tuple[float, float]:
    """MAR: mask `rate` of each grid (N, R, R), sample the masked tokens with the diffusion head given the true
    class and the rest of the grid. Returns (share of masked shape tokens sampled in the right colour, share of
    masked background tokens sampled as a shape colour)."""
    n, length = len(grids), grids[0].numel()
    generator = torch.Generator(grids.device).manual_seed(0)
    orders = random_orders(n, length, generator, grids.device)
    mask = mask_by_order(orders, torch.full((n,), math.ceil(rate * length), device=grids.device))   # (N, L)
    tokens = rearrange(images.continuous(grids), "n h w c -> n (h w) c")                            # (N, L, 3)
    z = model.conditions(tokens, mask, labels)                                                       # (N, L, D)
    sampled = images.ids(model.head.sample(z[mask], generator=generator))                           # (M,)
    true = grids.flatten(1)[mask]
    shape = true > 0
    return (sampled == true)[shape].float().mean().item(), (sampled[~shape] > 0).float().mean().item()


class LocalRule:
    """The best purely local predictor, for scale: the token most often found behind each 3x3 neighbourhood
    (the 8 neighbours' ids, [MASK] and the grid's outside included) in the training grids with a share `rate`
    masked; an unseen neighbourhood predicts background. A model that beats it reads beyond adjacent tokens."""

    def __init__(self, grids: torch.Tensor, mask_id: int, rate: float = 0.1, passes: int = 5):
        self.mask_id = mask_id
        generator = torch.Generator(grids.device).manual_seed(0)
        codes, targets = [], []
        for _ in range(passes):
            mask = random_mask(torch.full((len(grids),), rate, device=grids.device), grids[0].numel(), generator)
            codes.append(self.codes(torch.where(mask.view_as(grids), mask_id, grids))[mask])
            targets.append(grids.flatten(1)[mask])
        self.keys, inverse = torch.cat(codes).unique(return_inverse=True)                     # (U,), (M,)
        counts = torch.zeros(len(self.keys), mask_id, device=grids.device)
        counts.index_put_((inverse, torch.cat(targets)), torch.ones_like(inverse, dtype=torch.float), accumulate=True)
        self.best = counts.argmax(-1)                                                          # (U,)

    def codes(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, R, R) ids with [MASK] -> (N, L) one integer per position naming its 8 neighbours' ids."""
        base = self.mask_id + 2                                                    # ids, [MASK], outside
        padded = F.pad(inputs, (1, 1, 1, 1), value=self.mask_id + 1)
        r = inputs.shape[-1]
        code = torch.zeros_like(inputs)
        for dy, dx in [(dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]:
            code = code * base + padded[:, dy:dy + r, dx:dx + r]
        return code.flatten(1)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, R, R) ids with [MASK] -> (N, L) predicted ids."""
        codes = self.codes(inputs)
        at = torch.searchsorted(self.keys, codes).clamp(max=len(self.keys) - 1)
        return torch.where(self.keys[at] == codes, self.best[at], 0)


@torch.no_grad()
def near_certain(model, oracle: ExactShapes, rule: LocalRule, grids: torch.Tensor, labels: torch.Tensor,
                 rate: float = 0.1) -> tuple[float, float, float, float]:
    """Where the answer is nearly certain: `rate` of each grid (N, R, R) masked, scored on the masked tokens on
    and next to the shape. Returns KL(exact || model) in nats (how far the model's conditionals are from Bayes'
    rule) and the share of those tokens whose most likely id is right for
    the model, the exact conditionals and the 3x3 LocalRule."""
    inputs, targets, masked = model.mask_tokens(grids, torch.Generator(grids.device).manual_seed(0), rate)
    model_logp = model.logits(inputs, labels).log_softmax(-1)                                 # (N, L, 5)
    exact_logp = oracle.logits(inputs.cpu(), labels.cpu()).to(grids.device).log_softmax(-1)
    kl = (exact_logp.exp() * (exact_logp - model_logp)).sum(-1)                               # (N, L)
    where = masked & near_shape(grids)
    right = [(guess == targets)[where].float().mean().item()
             for guess in (model_logp.argmax(-1), exact_logp.argmax(-1), rule(inputs.view_as(grids)))]
    return kl[where].mean().item(), *right


def probes(model, images: TokenImages, grids: torch.Tensor, labels: torch.Tensor,
           oracle: ExactShapes | None = None, rule: LocalRule | None = None) -> dict[str, str]:
    """The held-out probes of the module docstring for this generator kind: column name -> value."""
    if model.cfg.kind == "mar":
        right, stray = mar_context(model, images, grids, labels)
        return {"masked shape tokens sampled right (70% visible)": f"{right:.3f}",
                "masked background sampled as shape": f"{stray:.3f}"}
    usage = label_nll(model, grids, labels, 0.5, where=near_shape(grids))
    kl, *right = near_certain(model, oracle, rule, grids, labels)
    return {"NLL near the shape: true class / other shape / null": " / ".join(f"{v:.3f}" for v in usage),
            "p(background) far from the shape": f"{far_background_probability(model, grids, labels):.3f}",
            "KL to exact, mask rate 0.1, near the shape": f"{kl:.3f}",
            "right there: model / exact / 3x3 rule": " / ".join(f"{v:.3f}" for v in right)}


class TokenShapesStage:
    """The generator on token Shapes as a stage of the project's trainer: `fit` runs the loop, and every
    `sample_every` steps `sample_grid` evaluates the samples and the probes and prints a row of the table."""

    kind = "generator"

    def __init__(self, model, images: TokenImages, cfg: RunConfig, raster: bool, held: tuple, probes_on: tuple,
                 per_class: int, device: torch.device):
        self.model, self.net, self.images, self.cfg, self.raster = model, model, images, cfg, raster
        self.held, self.probes_on, self.device = held, probes_on, device     # (grids, labels), (oracle, rule)
        self.eval_labels = torch.arange(len(SHAPES_CLASS_NAMES), device=device).repeat_interleave(per_class)
        self.per_class, self.start, self.step, self.table_started = per_class, time.perf_counter(), 0, False

    def param_groups(self):
        return {"g": list(self.model.parameters())}

    def wrap(self, ddp: bool, compile: bool) -> None:
        self.net = wrap(self.model, ddp, compile and not self.raster)

    def losses(self, batch, step: int):
        tokens, labels = batch
        self.step = step
        loss = raster_loss(self.model, tokens, labels) if self.raster else self.net(tokens, labels)[0]
        return {"g": loss}, {"loss": loss.detach()}

    @torch.no_grad()
    def sample_grid(self, path) -> None:
        self.model.eval()
        if self.raster:
            samples = self.images.decode(raster_sample(self.model, self.eval_labels, self.cfg.sampler.temperature, 1))
        else:
            samples = generate(self.model, self.images, self.eval_labels, self.cfg.sampler, seed=1)
        acc = attribute_accuracy(samples, self.eval_labels, SHAPES_CLASS_NAMES)
        probed = {} if self.raster else probes(self.model, self.images, *self.held, *self.probes_on)
        self.model.train()
        row = {"step": f"{self.step + 1}", "samples: accuracy": f"{acc['accuracy']:.1%}",
               "shape": f"{acc['shape_accuracy']:.1%}", "colour": f"{acc['colour_accuracy']:.1%}", **probed,
               "time": f"{time.perf_counter() - self.start:.0f} s"}
        if not self.table_started:
            print("| " + " | ".join(row) + " |\n" + "|---" * len(row) + "|")
            self.table_started = True
        print("| " + " | ".join(row.values()) + " |", flush=True)
        save_grid(samples, path, nrow=self.per_class, scale=4)

    def state(self) -> dict:
        return {"model": self.model.state_dict()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny",
                   help="whose generator (MaskGIT: tiny; MAR: tiny-mar), training and sampler settings to use")
    p.add_argument("--resolution", type=int, default=12, help="token grid side R (Shapes needs R >= 8)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--train-size", type=int, default=20_000)
    p.add_argument("--per-class", type=int, default=16, help="samples per class at each evaluation")
    p.add_argument("--out", default="runs/token_shapes", help="folder for the training log, samples and checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda > mps > cpu)")
    p.add_argument("--raster", action="store_true",
                   help="train the MaskGIT blocks as a raster-order autoregressive model instead (causal attention)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    train_cfg = cfg.train_generator
    train_cfg.steps, train_cfg.sample_every, train_cfg.ckpt_every = args.steps, args.eval_every, args.steps
    seed_everything(cfg.seed)

    device = pick_device(args.device)
    grids, labels = (t.to(device) for t in token_shapes(args.resolution, args.train_size + HELD_OUT))
    held_grids, held_labels = grids[args.train_size:], labels[args.train_size:]
    grids, labels = grids[:args.train_size], labels[:args.train_size]
    g, length, num_classes = cfg.generator, args.resolution ** 2, len(SHAPES_CLASS_NAMES)
    images = TokenImages(scale=PALETTE[grids.cpu()].std().item())
    if args.raster and g.kind != "maskgit":
        raise SystemExit("--raster trains the MaskGIT blocks causally; use it with --preset tiny")
    if args.raster and g.local_conv:
        g.local_conv = False
        print("--raster: generator.local_conv off (a 3x3 window would let a position see the row below)")
    masked = g.kind == "maskgit" and not args.raster        # the probes read masked conditionals
    oracle = ExactShapes(args.resolution, 1, sides=32, positions=64) if masked else None
    rule = LocalRule(grids, len(PALETTE)) if masked else None
    model = (MaskedTransformer(g, len(PALETTE), length, num_classes, causal=True) if args.raster else
             GENERATORS[g.kind](g, PALETTE.shape[1] if g.kind == "mar" else len(PALETTE), length, num_classes))
    model = model.to(device)
    eval_labels = torch.arange(num_classes, device=device).repeat_interleave(args.per_class)
    n = len(eval_labels)
    real = attribute_accuracy(images.decode(grids[:n]), labels[:n], SHAPES_CLASS_NAMES)
    print(f"token Shapes {args.resolution}x{args.resolution}, generator {g.kind}{' (raster order)' * args.raster}; "
          f"the checker reads the training grids {real['accuracy']:.1%} right", end="")
    if g.kind == "maskgit":
        eps = g.label_smoothing
        print(f"; label smoothing {eps} caps p(background) at {1 - eps + eps / len(PALETTE):.3f}", end="")
    print()
    if masked:
        exact = label_nll(oracle, held_grids.cpu(), held_labels.cpu(), 0.5, where=near_shape(held_grids.cpu()))
        print("the exact conditionals' NLL near the shape (true class / other shape / null): "
              + " / ".join(f"{v:.3f}" for v in exact))
    tokens = images.continuous(grids) if g.kind == "mar" else grids                    # MAR: continuous tokens
    stage = TokenShapesStage(model, images, cfg, args.raster, (held_grids, held_labels), (oracle, rule),
                             args.per_class, device)
    dataset = torch.utils.data.TensorDataset(tokens, labels)
    fit(stage, dataset, train_cfg, Path(args.out), cfg)
    print(f"training log, checkpoint and the samples of each evaluation (one row per class) in {args.out}")


if __name__ == "__main__":
    main()
