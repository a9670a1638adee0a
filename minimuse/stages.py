"""The stages of a run and the pipeline that chains them: tokenizer -> token cache -> generator -> samples.

Each stage owns its models and turns a batch into named losses for `trainer.fit`:
    TokenizerStage   images -> VQGAN reconstruction + codebook + (after disc_start) PatchGAN losses
    GeneratorStage   cached token grids -> masked-token cross-entropy (MaskGIT / Muse), or MAR's
                     per-token diffusion loss on continuous latents
`run_pipeline` is what `python train.py` calls.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from minimuse.checkpoint import load_checkpoint
from minimuse.config import GeneratorConfig, RunConfig, from_dict
from minimuse.data import build_dataset
from minimuse.lpips import build_perceptual_loss
from minimuse.mar import MAR
from minimuse.metrics import attribute_accuracy, compare_spread, format_report, psnr, spread_stats
from minimuse.quantizer import codebook_stats
from minimuse.sampler import generate
from minimuse.trainer import fit, infinite_batches, seed_everything, setup_distributed
from minimuse.transformer import MaskedTransformer, masked_generator_loss
from minimuse.viz import save_grid
from minimuse.vqgan import VQGAN, PatchGAN, adaptive_weight, hinge_d_loss, reconstruction_loss


def wrap(module: nn.Module, ddp: bool, compile: bool) -> nn.Module:
    """The callable a stage trains through: DDP for multi-process runs, then torch.compile when asked."""
    net = DDP(module) if ddp else module
    return torch.compile(net) if compile else net


# ---------------------------------------------------------------------------------------------------------
# Stage 1: the tokenizer
# ---------------------------------------------------------------------------------------------------------


class TokenizerStage:
    """VQGAN training (Taming eq. 5-7): L = L_rec + w_p * LPIPS + L_VQ + lambda * L_GAN, and the hinge D loss."""

    kind = "tokenizer"

    def __init__(self, cfg: RunConfig, device: torch.device, preview: torch.Tensor):
        self.cfg, self.tcfg, self.device = cfg, cfg.tokenizer, device
        self.model = VQGAN(cfg.tokenizer).to(device)
        self.disc = PatchGAN(cfg.tokenizer.disc_channels, cfg.tokenizer.disc_layers).to(device)
        self.perceptual = build_perceptual_loss(cfg.tokenizer.lpips_weights)
        if self.perceptual is not None:
            self.perceptual.to(device)
        self.net, self.disc_net = self.model, self.disc
        self.preview = preview.to(device)                                 # (16, 3, H, W) held-out images

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"g": list(self.model.parameters()), "d": list(self.disc.parameters())}

    def wrap(self, ddp: bool, compile: bool) -> None:
        self.net, self.disc_net = wrap(self.model, ddp, compile), wrap(self.disc, ddp, compile)

    def losses(self, batch, step: int):
        images = batch[0]                                                 # (B, 3, H, W)
        rec, q = self.net(images)
        nll = reconstruction_loss(images, rec, self.tcfg.rec_loss)
        if self.perceptual is not None:
            nll = nll + self.tcfg.perceptual_weight * self.perceptual(images, rec).mean()
        g_loss = nll + q.loss
        metrics = {"loss": nll.detach(), "reg": q.loss.detach(), "psnr": psnr(images, rec.detach()).mean(),
                   **q.stats}
        losses = {}
        if step >= self.tcfg.disc_start:
            gan = -self.disc(rec).mean()       # the raw D: only the D loss below goes through DDP's reducer
            weight = self.tcfg.disc_weight * adaptive_weight(nll, gan, self.model.decoder.conv_out.weight)
            g_loss = g_loss + weight * gan
            real, fake = self.disc_net(torch.cat([images, rec.detach()])).chunk(2)   # one (DDP) forward
            losses["d"] = hinge_d_loss(real, fake)
            metrics.update(gan=gan.detach(), d=losses["d"].detach(), lam=weight)
        losses["g"] = g_loss
        return losses, metrics

    @torch.no_grad()
    def finish(self, batches, num_batches: int = 20) -> None:
        """Before the final save: a continuous bottleneck measures its latent scale on training batches."""
        if self.model.discrete:
            return
        self.model.eval()
        means = [self.model.bottleneck.to_moments(self.model.encoder(next(batches)[0])) for _ in range(num_batches)]
        self.model.bottleneck.measure_scale(torch.cat(means)[:, : self.tcfg.token_dim])   # the means, not logvars
        self.model.train()

    @torch.no_grad()
    def sample_grid(self, path: Path) -> None:
        """Held-out originals (top row) above their reconstructions (bottom row)."""
        self.model.eval()
        rec = self.model.decode(self.model.encode(self.preview))
        self.model.train()
        save_grid(torch.cat([self.preview, rec]), path, nrow=len(self.preview), scale=4)

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "disc": self.disc.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.disc.load_state_dict(state["disc"])


@torch.no_grad()
def evaluate_tokenizer(model: VQGAN, dataset, device: torch.device, batch_size: int = 250) -> dict:
    """Mean PSNR of reconstructions over a whole (held-out) dataset, and for a VQ tokenizer the codebook
    usage and perplexity of all its tokens together."""
    model.eval()
    scores, tokens = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    for images, _ in tqdm(loader, desc="evaluate tokenizer", leave=False):
        images = images.to(device)
        t = model.encode(images)
        scores.append(psnr(images, model.decode(t)).cpu())
        tokens.append(t.cpu())
    result = {"psnr": torch.cat(scores).mean().item(), "images": len(dataset)}
    if model.discrete:
        perplexity, usage = codebook_stats(torch.cat(tokens), model.cfg.codebook_size)
        result.update(codebook_usage=float(usage), perplexity=float(perplexity), codebook_size=model.cfg.codebook_size)
    return result


def load_tokenizer(path: str | Path, device: torch.device) -> tuple[VQGAN, RunConfig]:
    """A trained tokenizer in eval mode from a run folder or tokenizer.pt, with the run config it was made with."""
    state = load_checkpoint(path, "tokenizer", map_location=device)
    cfg = from_dict(state["config"])
    model = VQGAN(cfg.tokenizer).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


# ---------------------------------------------------------------------------------------------------------
# Stage 2: the masked generator, on token grids encoded once and cached
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def cache_tokens(tokenizer: VQGAN, dataset, path: Path, device: torch.device, batch_size: int = 500):
    """Encode every image of `dataset` once; reuse `path` while it matches this tokenizer and these images.

    Ids are stored as int16, continuous latents as float16 (half the disk, far below their noise level).
    """
    rank, world = setup_distributed()
    if rank != 0:                       # under DDP, rank 0 encodes and the other ranks read its file
        dist.barrier()
        cached = torch.load(path, weights_only=True)
        return torch.utils.data.TensorDataset(widen(cached["tokens"]), cached["labels"])
    key = {"tokenizer": fingerprint(tokenizer), "images": len(dataset), "data": data_fingerprint(dataset)}
    cached = torch.load(path, weights_only=True) if path.exists() else None
    if cached is None or cached["key"] != key:
        tokens, labels = [], []
        for images, y in tqdm(torch.utils.data.DataLoader(dataset, batch_size=batch_size), desc="encode tokens"):
            t = tokenizer.encode(images.to(device)).cpu()
            tokens.append(t.to(torch.int16) if tokenizer.discrete else t.half())
            labels.append(torch.as_tensor(y))
        cached = {"key": key, "tokens": torch.cat(tokens), "labels": torch.cat(labels)}
        torch.save(cached, path)
    if world > 1:
        dist.barrier()
    return torch.utils.data.TensorDataset(widen(cached["tokens"]), cached["labels"])


def widen(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.float() if tokens.dtype.is_floating_point else tokens.long()


def fingerprint(model: nn.Module) -> float:
    """A cheap identity for a set of weights: their sum (changes whenever the tokenizer is retrained)."""
    return float(sum(p.double().sum() for p in model.state_dict().values() if p.dtype.is_floating_point))


def data_fingerprint(dataset) -> float:
    """A cheap identity for a dataset: the pixel sums of its first and last images (they change with the data's
    seed, its resolution or its files)."""
    return float(sum(dataset[i][0].double().sum() for i in (0, len(dataset) - 1)))


def new_generator(g: GeneratorConfig, token_size: int, seq_len: int, num_classes: int) -> nn.Module:
    """A fresh generator of kind `g.kind` over `seq_len` tokens: MaskGIT over a codebook of `token_size` ids, or
    MAR over continuous tokens of `token_size` channels."""
    if g.kind == "maskgit":
        return MaskedTransformer(g, token_size, seq_len, num_classes)
    if g.kind == "mar":
        return MAR(g, token_size, seq_len, num_classes)
    raise ValueError(f"unknown generator.kind {g.kind!r}; choose maskgit or mar")


def build_generator(cfg: RunConfig, tokenizer: VQGAN, num_classes: int) -> nn.Module:
    """The generator of `cfg.generator.kind` over this tokenizer's token grid."""
    side = cfg.data.resolution // tokenizer.f
    if cfg.generator.kind == "maskgit" and not tokenizer.discrete:
        raise ValueError("generator.kind=maskgit needs a VQ tokenizer (tokenizer.bottleneck=vq)")
    if cfg.generator.kind == "mar" and tokenizer.discrete:
        raise ValueError("generator.kind=mar needs a continuous tokenizer (tokenizer.bottleneck=kl or plain)")
    token_size = tokenizer.cfg.codebook_size if tokenizer.discrete else tokenizer.cfg.token_dim
    return new_generator(cfg.generator, token_size, side * side, num_classes)


def generator_loss(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, net: nn.Module | None = None):
    """One training loss for either generator kind -> (loss, what to log). MAR's forward is its diffusion loss;
    MaskGIT's is the masked-token cross-entropy. `net`: the wrapped model (DDP / compile) to run, default model."""
    g = model.cfg
    if g.kind == "mar":
        loss = (model if net is None else net)(tokens, labels)
        return loss, {"loss": loss.detach()}
    loss, acc = masked_generator_loss(model, tokens, labels, g.cond_drop, g.label_smoothing, net)
    return loss, {"loss": loss.detach(), "acc": acc}


class GeneratorStage:
    """The generator on cached token grids: masked-token cross-entropy (MaskGIT / Muse) for ids, the per-token
    diffusion loss (MAR) for continuous latents. Samples are decoded by the tokenizer."""

    kind = "generator"

    def __init__(self, cfg: RunConfig, device: torch.device, tokenizer: VQGAN, class_names: list[str]):
        self.cfg, self.device, self.tokenizer, self.class_names = cfg, device, tokenizer, class_names
        self.model = build_generator(cfg, tokenizer, max(1, len(class_names))).to(device)
        self.net = self.model

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"g": list(self.model.parameters())}

    def wrap(self, ddp: bool, compile: bool) -> None:
        self.net = wrap(self.model, ddp, compile)

    def losses(self, batch, step: int):
        tokens, labels = batch                                            # (B, h, w) ids or (B, h, w, C), (B,)
        loss, logged = generator_loss(self.model, tokens, labels, self.net)
        return {"g": loss}, logged

    @torch.no_grad()
    def sample_grid(self, path: Path, per_class: int = 8, seed: int = 0) -> torch.Tensor:
        """One row per class, `per_class` samples each, with the preset's sampler settings."""
        labels = torch.arange(self.model.num_classes, device=self.device).repeat_interleave(per_class)
        images = generate(self.model, self.tokenizer, labels, self.cfg.sampler, seed)
        save_grid(images, path, nrow=per_class, scale=3)
        return images

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "tokenizer": self.tokenizer.state_dict(),
                "class_names": list(self.class_names)}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])


def load_generator(path: str | Path, device: torch.device):
    """(generator, tokenizer, run config, class names) from a run folder or generator.pt, both in eval mode."""
    state = load_checkpoint(path, "generator", map_location=device)
    cfg = from_dict(state["config"])
    tokenizer = VQGAN(cfg.tokenizer).to(device)
    tokenizer.load_state_dict(state["tokenizer"])
    class_names = state["class_names"]
    model = build_generator(cfg, tokenizer, max(1, len(class_names))).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), tokenizer.eval(), cfg, class_names


# ---------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------


def run_pipeline(cfg: RunConfig, out_dir: str | Path, stages: tuple[str, ...], device: torch.device,
                 resume: bool = False) -> dict:
    """Train the requested stages in order and return (and write `metrics.json`) their summaries.

    Under DDP every rank trains; rank 0 alone evaluates and writes the summary and pictures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    main = setup_distributed()[0] == 0
    seed_everything(cfg.seed)
    data = cfg.data
    train = build_dataset(data.name, data.resolution, "train", seed=cfg.seed, size=data.train_size, root=data.root)
    holdout = build_dataset(data.name, data.resolution, "holdout", seed=cfg.seed, size=data.holdout_size,
                            root=data.root)
    summary_path = out_dir / "metrics.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    seconds = summary.setdefault("seconds", {})

    if "tokenizer" in stages:
        start = time.perf_counter()
        preview = torch.stack([holdout[i][0] for i in range(min(16, len(holdout)))])
        stage = TokenizerStage(cfg, device, preview)
        tcfg = cfg.train_tokenizer
        fit(stage, infinite_batches(train, tcfg.batch_size, cfg.seed, device), tcfg, out_dir, cfg, resume)
        tokenizer = stage.model.eval()
        if main:
            summary["tokenizer"] = evaluate_tokenizer(tokenizer, holdout, device)
            print("tokenizer on held-out images: "
                  + ", ".join(f"{k} {v:.4g}" for k, v in summary["tokenizer"].items()))
        seconds["tokenizer"] = time.perf_counter() - start
    if "generator" in stages:
        if "tokenizer" not in stages:
            tokenizer, tok_cfg = load_tokenizer(out_dir, device)
            cfg.tokenizer = tok_cfg.tokenizer                             # the tokenizer's own config rules
        start = time.perf_counter()
        tokens = cache_tokens(tokenizer, train, out_dir / "tokens.pt", device)
        seed_everything(cfg.seed)             # the same generator whether the tokens were encoded or read from disk
        stage = GeneratorStage(cfg, device, tokenizer, train.class_names)
        tcfg = cfg.train_generator
        fit(stage, infinite_batches(tokens, tcfg.batch_size, cfg.seed, device), tcfg, out_dir, cfg, resume)
        if main:
            summary["generator"] = evaluate_generator(stage, holdout, out_dir)
        seconds["generator"] = time.perf_counter() - start
    if main:
        summary_path.write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def evaluate_generator(stage: GeneratorStage, holdout, out_dir: Path) -> dict:
    """Final per-class sample grid; on Shapes also attribute accuracy and position/size spread vs the data."""
    per_class = stage.cfg.eval_per_class
    stage.model.eval()
    images = stage.sample_grid(out_dir / "samples.png", per_class=per_class)
    print(f"wrote {out_dir / 'samples.png'} ({per_class} samples per class)")
    if stage.cfg.data.name != "shapes":
        return {}
    labels = torch.arange(stage.model.num_classes).repeat_interleave(per_class)
    acc = attribute_accuracy(images.cpu(), labels, stage.class_names)
    real = torch.stack([holdout[i][0] for i in range(len(holdout))])
    spread = compare_spread(spread_stats(images.cpu()), spread_stats(real))
    print(format_report(acc))
    print("spread of generated vs data (relative std difference): "
          + ", ".join(f"{k} {v:+.1%}" for k, v in spread.items()))
    return {"attribute_accuracy": acc, "spread_vs_data": spread, "samples_per_class": per_class}
