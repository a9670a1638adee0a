"""What `python train.py` runs: tokenizer -> token cache -> generator -> samples and a report.

    run_pipeline(cfg, out_dir, stages, device)      trains the requested stages in order, writes metrics.json
    evaluate_tokenizer / evaluate_generator         the held-out figures each stage ends with

Under DDP every rank trains; rank 0 alone evaluates and writes the summary and the pictures.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from minimuse.config import RunConfig
from minimuse.data import build_dataset
from minimuse.eval.metrics import psnr
from minimuse.eval.shapes_checker import attribute_accuracy, compare_spread, format_report, spread_stats
from minimuse.inference import load_tokenizer
from minimuse.runtime import seed_everything, setup_distributed
from minimuse.tokenizer.autoencoder import Autoencoder
from minimuse.tokenizer.quantizer import codebook_stats
from minimuse.train.stages import GeneratorStage, TokenizerStage
from minimuse.train.token_cache import cache_tokens
from minimuse.train.trainer import fit


def run_pipeline(cfg: RunConfig, out_dir: str | Path, stages: tuple[str, ...], device: torch.device,
                 resume: bool = False) -> dict:
    """Train the requested stages ("tokenizer", "generator") in order and return (and write `metrics.json`)
    their summaries. The generator stage alone reads the run's tokenizer.pt, whose own config then rules."""
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
        fit(stage, train, cfg.train_tokenizer, out_dir, cfg, resume)
        tokenizer = stage.model.eval()
        if main:
            summary["tokenizer"] = evaluate_tokenizer(tokenizer, holdout, device)
            print("tokenizer on held-out images: "
                  + ", ".join(f"{k} {v:.4g}" for k, v in summary["tokenizer"].items()))
        seconds["tokenizer"] = time.perf_counter() - start
    if "generator" in stages:
        if "tokenizer" not in stages:
            tokenizer, tokenizer_run = load_tokenizer(out_dir, device)
            cfg.tokenizer = tokenizer_run.tokenizer                       # the tokenizer's own config rules
        start = time.perf_counter()
        tokens = cache_tokens(tokenizer, train, out_dir / "tokens.pt", device)
        seed_everything(cfg.seed)             # the same generator whether the tokens were encoded or read from disk
        stage = GeneratorStage(cfg, device, tokenizer, train.class_names)
        fit(stage, tokens, cfg.train_generator, out_dir, cfg, resume)
        if main:
            summary["generator"] = evaluate_generator(stage, holdout, out_dir)
        seconds["generator"] = time.perf_counter() - start
    if main:
        summary_path.write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def evaluate_tokenizer(model: Autoencoder, dataset, device: torch.device, batch_size: int = 250) -> dict:
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
