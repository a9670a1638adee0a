"""Question: how far can a few parallel decoding steps go on Shapes with a perfect model? The MaskGIT sampler
driven by exact conditionals.

Shapes without its colour jitter and background noise has a small distribution that can be written down. A
class fixes the shape and the colour, and (side, cx, cy) fix the image. Enumerate those on a fine grid,
cut every image into P x P patches, and call each distinct patch (its exact pixels and colour) a token: a
G x G grid, the output of a perfect local tokenizer. Given a partly decoded grid, the exact conditional of
every masked token is then Bayes' rule over the enumerated grids that agree with what is visible:

    p(x_i = v | x_visible, class) = sum_j w_j [grid_j(i) = v] [grid_j agrees with x_visible] / (same without [..= v])

with w_j the share of (side, cx, cy) draws that render to grid j. `parallel_decode` runs on these exact
conditionals in place of a trained transformer (the null class, id 12, is the mixture of all 12 classes, so
classifier-free guidance works as well), and the Shapes checker reads the decoded images. The result is
the best any generator can reach with a sampler setting: what a trained model loses below it is the
model's fault, what is lost below the data's own accuracy is the sampler's, from drawing tokens of the
same step independently.

    python -m research.oracle_sampler                       # 8x8 tokens of 4x4 pixels, as --preset tiny (~50 min)
    python -m research.oracle_sampler --grid 12 --patch 1   # the 5-id token Shapes of token_shapes.py (~16 min)
    python -m research.oracle_sampler --rows 3              # the preset's sampler at 8 and 12 steps, and MaskGIT's

When the sampler has drawn a grid that no enumerated image matches (tokens of one step that contradict
each other), the conditionals fall back to the grids with the fewest disagreements (a soft count with
weight exp(-30) per disagreement), as a model would have to.
"""
import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from einops import rearrange

from minimuse.config import SamplerConfig
from minimuse.data.shapes import COLOURS, SHAPES, SHAPES_CLASS_NAMES, ShapeAttributes, shape_mask
from minimuse.eval.shapes_checker import attribute_accuracy
from minimuse.generators.maskgit import MaskedTransformer
from minimuse.inference import generate
from minimuse.presets import get_preset

BACKGROUND_RGB = (30, 30, 30)
PALETTE = torch.tensor([BACKGROUND_RGB, *COLOURS.values()]) / 127.5 - 1  # (5, 3): background, then the colours
CHECKER_MIN_SIZE = 32    # the checker's rules are tuned for Shapes at 32 pixels; token_shapes.py draws 12 -> 36
DISAGREEMENT_COST = 30.0  # nats per visible token a grid disagrees with: agreeing grids dominate when any exist


def enumerate_grids(shape: int, grid: int, patch: int, sides: int, positions: int):
    """Every image of one shape on a sides x positions x positions grid of (side, cx, cy) draws, as token
    grids. Returns (distinct grids (N, L) of patch-pattern ids, their weights (N,), patterns (M, P*P) bool);
    pattern 0 is the empty patch. The draws follow `Shapes.attributes`: side uniform in [R/4, R/2), the
    centre uniform where the whole bounding box fits."""
    r = grid * patch
    u = (np.arange(sides) + 0.5) / sides
    v = (np.arange(positions) + 0.5) / positions
    us, vx, vy = (a.ravel()[:, None, None] for a in np.meshgrid(u, v, v, indexing="ij"))     # (D, 1, 1) each
    side = r / 4 + us * r / 4
    cx, cy = side / 2 + vx * (r - side), side / 2 + vy * (r - side)
    masks = shape_mask(ShapeAttributes(r, shape, 0, side, cx, cy, (0, 0, 0), (0, 0, 0)))     # (D, R, R)
    patches = rearrange(masks, "d (h p) (w q) -> d (h w) (p q)", p=patch, q=patch)          # (D, L, P*P)
    codes = np.packbits(patches, axis=-1, bitorder="little")                                 # (D, L, bytes)
    codes = codes.view(f"V{codes.shape[-1]}")[..., 0]                                        # (D, L) one value each
    patterns, pattern_ids = np.unique(codes, return_inverse=True)
    pattern_ids = pattern_ids.reshape(codes.shape)
    grids, counts = np.unique(pattern_ids, axis=0, return_counts=True)
    pattern_bits = np.unpackbits(patterns.view(np.uint8).reshape(len(patterns), -1), axis=-1,
                                 bitorder="little")[:, : patch * patch].astype(bool)
    return grids, counts / counts.sum(), pattern_bits


class ExactShapes:
    """Exact conditionals of jitter-free Shapes token grids, with the interface of a `MaskedTransformer`
    (seq_len, mask_id, null_class, eval/train, mask_tokens, sample, and logits(ids (B, L), labels (B,)) ->
    (B, L, V)), so the sampler and the probes that read a transformer run on it unchanged.

    Token ids: 0 is the empty patch, 1 + 4 * (pattern - 1) + colour a patch with that pattern of that colour
    (patterns indexed over all three shapes together)."""

    training = False

    def __init__(self, grid: int, patch: int, sides: int, positions: int):
        per_shape = [enumerate_grids(k, grid, patch, sides, positions) for k in range(len(SHAPES))]
        bits = np.concatenate([p for _, _, p in per_shape])
        self.patterns, inverse = np.unique(bits, axis=0, return_inverse=True)                  # (M, P*P)
        assert not self.patterns[0].any(), "pattern 0 must be the empty patch"
        offsets = np.cumsum([0] + [len(p) for _, _, p in per_shape])
        # per shape: grids as global pattern ids (N, L), log-weights (N,)
        self.grids = [torch.from_numpy(inverse[offsets[k]:offsets[k + 1]][g]) for k, (g, _, _) in enumerate(per_shape)]
        self.log_weights = [torch.from_numpy(np.log(w)).float() for _, w, _ in per_shape]
        self.num_patterns, self.colours = len(self.patterns), len(COLOURS)
        self.vocab = 1 + self.colours * (self.num_patterns - 1)
        self.seq_len, self.mask_id, self.null_class = grid * grid, self.vocab, len(SHAPES_CLASS_NAMES)
        self.grid, self.patch = grid, patch

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    # The transformer's own masking, guidance and sampling, running on these exact logits.
    mask_tokens = MaskedTransformer.mask_tokens
    guided_logits = MaskedTransformer.guided_logits
    sample = MaskedTransformer.sample

    def token_ids(self, pattern: torch.Tensor, colour: int) -> torch.Tensor:
        """Pattern ids (...) of one colour -> token ids (...); the inverse of `patterns_and_colours`."""
        return torch.where(pattern > 0, 1 + self.colours * (pattern - 1) + colour, 0)

    def patterns_and_colours(self, ids: torch.Tensor):
        """Token ids (...) -> pattern ids (...) and colours (...) (-1 for the empty patch and [MASK])."""
        shaped = (ids > 0) & (ids < self.mask_id)
        pattern = torch.where(shaped, (ids - 1) // self.colours + 1, 0)
        colour = torch.where(shaped, (ids - 1) % self.colours, -1)
        return pattern, colour

    def _pattern_posterior(self, shape: int, pattern: torch.Tensor, visible: torch.Tensor):
        """log evidence () and p(pattern at each position) (L, M) for one shape, given visible patterns."""
        disagree = (self.grids[shape][:, visible] != pattern[visible]).sum(1).float()           # (N,)
        logits = self.log_weights[shape] - DISAGREEMENT_COST * disagree
        weights = logits.softmax(0)                                                             # (N,)
        grids = self.grids[shape].T                                                             # (L, N)
        probs = torch.zeros(self.seq_len, self.num_patterns).scatter_add_(1, grids, weights.expand_as(grids))
        return logits.logsumexp(0), probs

    def logits(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Exact log-probabilities (B, L, V) of every token of ids (B, L) given labels (B,)."""
        out = torch.empty(len(ids), self.seq_len, self.vocab)
        for row, (x, label) in enumerate(zip(ids, labels.tolist())):
            pattern, colour = self.patterns_and_colours(x)
            visible = x != self.mask_id
            classes = range(self.null_class) if label == self.null_class else [label]
            evidence, probs = [], []
            for shape in sorted({c // self.colours for c in classes}):
                shape_evidence, pattern_probs = self._pattern_posterior(shape, pattern, visible)
                for c in (c for c in classes if c // self.colours == shape):
                    wrong_colour = ((colour >= 0) & (colour != c % self.colours)).sum()
                    evidence.append(shape_evidence - DISAGREEMENT_COST * wrong_colour)
                    token_probs = torch.zeros(self.seq_len, self.vocab)
                    token_probs[:, 0] = pattern_probs[:, 0]
                    token_probs[:, 1 + c % self.colours::self.colours] = pattern_probs[:, 1:]
                    probs.append(token_probs)
            class_weights = torch.stack(evidence).softmax(0)                                    # (K,)
            out[row] = torch.einsum("k,klv->lv", class_weights, torch.stack(probs)).clamp_min(1e-9).log()
        return out

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token grids (B, G, G) -> images (B, 3, S, S) in [-1, 1] (the tokenizer's role). Images under
        CHECKER_MIN_SIZE pixels are upscaled by an integer factor to at least that, as token_shapes.py does."""
        pattern, colour = self.patterns_and_colours(tokens.flatten())
        on = torch.from_numpy(self.patterns)[pattern]                                           # (B*L, P*P)
        pixels = torch.where(on, colour[:, None] + 1, 0)
        pixels = rearrange(pixels, "(b h w) (p q) -> b (h p) (w q)", b=len(tokens), h=self.grid, p=self.patch)
        scale = -(-CHECKER_MIN_SIZE // (self.grid * self.patch))                              # ceil
        pixels = pixels.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        return rearrange(PALETTE[pixels], "b y x c -> b c y x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=int, default=8, help="tokens per side G")
    p.add_argument("--patch", type=int, default=4, help="pixels per token side P (the image is G*P pixels)")
    p.add_argument("--sides", type=int, default=32, help="side draws enumerated")
    p.add_argument("--positions", type=int, default=64, help="centre draws enumerated per axis")
    p.add_argument("--per-class", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rows", type=int, default=None, help="sample only the first N sampler settings of the table")
    args = p.parse_args()
    torch.set_grad_enabled(False)

    start = time.perf_counter()
    oracle = ExactShapes(args.grid, args.patch, args.sides, args.positions)
    print(f"Shapes {args.grid * args.patch}x{args.grid * args.patch} as {args.grid}x{args.grid} tokens of "
          f"{args.patch}x{args.patch} pixels: {' / '.join(str(len(g)) for g in oracle.grids)} distinct grids "
          f"(circle / square / triangle), {oracle.vocab} token ids ({time.perf_counter() - start:.0f} s)", flush=True)
    preset = get_preset("tiny").sampler
    maskgit = SamplerConfig()                     # the defaults: 8 steps, guidance 2 ramped, choice temperature 4.5
    exact = replace(maskgit, guidance=0.0)
    rows = [(f"the preset: {preset.steps} steps, guidance {preset.guidance:g} ({preset.guidance_schedule}), choice temperature "
             f"{preset.choice_temperature:g}, top-k {preset.top_k}", preset),
            ("the preset's sampler at 12 steps", replace(preset, steps=12)),
            ("MaskGIT's sampler: 8 steps, guidance 2 ramped, choice temperature 4.5", maskgit),
            ("8 steps, no guidance (the exact conditionals)", exact),
            *((f"{n} steps, no guidance", replace(exact, steps=n)) for n in (12, 16, 24)),
            ("one token per step, no guidance", replace(exact, steps=oracle.seq_len)),
            ("8 steps, choice temperature 0 (most confident first)", replace(exact, choice_temperature=0.0)),
            ("8 steps, choice temperature 9", replace(exact, choice_temperature=9.0)),
            ("8 steps, temperature 0.7", replace(exact, temperature=0.7)),
            ("8 steps, guidance 5 constant", replace(maskgit, guidance=5.0, guidance_schedule="constant"))][:args.rows]
    labels = torch.arange(len(SHAPES_CLASS_NAMES)).repeat_interleave(args.per_class)
    data = attribute_accuracy(oracle.decode(sample_data(oracle, labels)), labels, SHAPES_CLASS_NAMES)
    print(f"the checker reads {len(labels)} enumerated images (drawn by their weights) {data['accuracy']:.1%} right\n",
          flush=True)
    print("| sampler | accuracy | circle / square / triangle | time |")
    print("|---|---|---|---|")
    for name, sampler in rows:
        t0 = time.perf_counter()
        images = generate(oracle, oracle, labels, sampler, seed=args.seed)
        acc = attribute_accuracy(images, labels, SHAPES_CLASS_NAMES)
        per_shape = torch.tensor([c["accuracy"] for c in acc["per_class"].values()]).view(len(SHAPES), -1).mean(1)
        print(f"| {name} | {acc['accuracy']:.1%} | " + " / ".join(f"{v:.0%}" for v in per_shape) +
              f" | {time.perf_counter() - t0:.0f} s |", flush=True)


def sample_data(oracle: ExactShapes, labels: torch.Tensor) -> torch.Tensor:
    """Token grids (B, G, G) drawn from the enumerated distribution of each label: the data the oracle models."""
    generator = torch.Generator().manual_seed(0)
    grids = []
    for label in labels.tolist():
        shape, colour = divmod(label, oracle.colours)
        j = torch.multinomial(oracle.log_weights[shape].exp(), 1, generator=generator).item()
        grids.append(oracle.token_ids(oracle.grids[shape][j], colour))
    return torch.stack(grids).view(len(labels), oracle.grid, oracle.grid)


if __name__ == "__main__":
    main()
