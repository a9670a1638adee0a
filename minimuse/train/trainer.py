"""One training loop for every stage (tokenizer, any generator kind).

A *stage* (see `stages.py`) knows its models and how to turn a batch into losses; this file knows the rest of
training: the warm-up + cosine learning rate, the optimizer, gradient accumulation and clipping, an EMA of the
weights, the progress bar, the CSV log and its plot, periodic sample grids and atomic checkpoints with resume.
Where it runs (device, precision, compile, DDP) is asked of `minimuse.runtime`. The loop for one step:

    lr <- schedule(step)
    for each micro-batch: losses = stage.losses(batch, step); loss[name].backward(inputs=params[name])
    clip; stop if a loss or gradient norm is not finite; optimizer[name].step() for each named loss ("g": the
    model, "d": a discriminator...)
"""
from __future__ import annotations

import csv
import itertools
import math
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, RandomSampler
from tqdm import tqdm

from minimuse import runtime
from minimuse.checkpoint import load_checkpoint, save_checkpoint
from minimuse.config import TrainConfig, to_dict
from minimuse.viz import plot_log

def lr_at(step: int, tcfg: TrainConfig) -> float:
    """Linear warm-up to `lr`, then cosine decay to `lr * min_lr_ratio` at the last step."""
    if step < tcfg.warmup:
        return tcfg.lr * (step + 1) / tcfg.warmup
    progress = min(1.0, (step - tcfg.warmup) / max(1, tcfg.steps - tcfg.warmup))
    return tcfg.lr * (tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(params, tcfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices/conv kernels only; biases, norms and embeddings-free 1-D params
    are not decayed (nanoGPT's grouping).

    `fused=True`: one kernel updates every parameter, where PyTorch's CPU default loops over them in Python:
    the same update, several times cheaper on small models (`benchmarks/optimizer.py` measures it)."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tcfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=tcfg.betas, fused=True)


def shuffled_batches(n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                     skip: int = 0) -> Iterator[list[int]]:
    """Endless global batches of indices into n items, reshuffled every epoch in the order a shuffling DataLoader
    seeded with `seed` reads them (PyTorch's RandomSampler and BatchSampler, the incomplete last batch dropped).
    Process `rank` of `world` takes every world-th index of each batch: `batch_size` is the global batch, so a
    preset trains the same recipe on any number of processes. The first `skip` batches are passed over as index
    lists only, so a resumed run reads exactly the batches an uninterrupted one would have."""
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {world} processes")
    generator = torch.Generator().manual_seed(seed)
    batches = BatchSampler(RandomSampler(range(n), generator=generator), batch_size, drop_last=True)
    if len(batches) == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training items; lower it with --set")
    for _ in itertools.count():
        torch.empty((), dtype=torch.int64).random_(generator=generator)   # a DataLoader's draw for its workers' seeds
        for batch in batches:
            if skip:
                skip -= 1
                continue
            yield batch[rank::world]


def infinite_batches(dataset, batch_size: int, seed: int, device: torch.device, skip: int = 0) -> Iterator:
    """Endless `shuffled_batches` of `dataset`, this process's share, moved to `device`."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    batches = shuffled_batches(len(dataset), batch_size, seed, rank, world, skip)
    # The loader draws its worker seeds from a generator of its own: the global RNG, which the models draw their
    # masks and noise from, stays untouched.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=0, generator=torch.Generator())
    for batch in loader:
        yield [t.to(device, non_blocking=True) for t in batch]


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------


class CSVLog:
    """Appends one row per logged step; the header is fixed by the first row."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        if not resume and path.exists():
            path.unlink()
        self.fields = None
        if path.exists():
            with open(path) as f:
                self.fields = next(csv.reader(f), None)

    def write(self, row: dict) -> None:
        new = self.fields is None
        self.fields = self.fields or list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def stop_if_not_finite(values: dict[str, float], kind: str, step: int, ckpt_path: Path) -> None:
    """Raise before an optimizer step that would write NaN/inf into the weights: one such step poisons every
    step after it, and the run would go on for hours producing noise. `values`: the losses and gradient norms
    (not the logged metrics: a PSNR may be rightly infinite)."""
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        kept = f"{ckpt_path} holds the last checkpoint" if ckpt_path.exists() else "no checkpoint was written yet"
        raise FloatingPointError(f"{kind}: {', '.join(f'{k}={v}' for k, v in bad.items())} at step {step}; "
                                 f"stopped before the update ({kept}). Try precision=fp32 or a lower lr.")


def fit(stage, dataset, tcfg: TrainConfig, out_dir: Path, run_config, resume: bool = False) -> None:
    """Train `stage` on batches of `dataset` for `tcfg.steps` optimizer steps, writing `<out_dir>/<stage.kind>.pt`,
    a CSV log, its plot and sample grids. With `resume`, continue from the checkpoint: its weights, optimizer
    state, random state and place in the data, so the resumed run goes on as the uninterrupted one would have."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world = runtime.setup_distributed()
    is_main = rank == 0
    params = stage.param_groups()                                         # {"g": [...], "d": [...]}
    optimizers = {name: make_optimizer(p, tcfg) for name, p in params.items()}
    ema = None
    if tcfg.ema_decay > 0:
        ema = {k: v.detach().clone() for k, v in stage.model.state_dict().items()}
    start, rng = 0, None
    ckpt_path = out_dir / f"{stage.kind}.pt"
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, stage.kind, map_location=stage.device)
        stage.load_state(state)
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizer"][name])
        ema = state["ema"] or ema
        start = state["step"]
        rng = state.get("rng")                                            # older checkpoints have none
        if is_main:
            print(f"resuming {stage.kind} from step {start}")
    compile = tcfg.compile and runtime.can_compile(stage.device)
    if tcfg.compile and not compile and is_main:
        why = "no C++ compiler was found" if stage.device.type == "cpu" else f"not used on {stage.device.type}"
        print(f"{stage.kind}: training without torch.compile ({why})")
    stage.wrap(ddp=world > 1, compile=compile)
    if world > 1:
        # DDP has just given every rank rank 0's weights. From here on each rank draws its own masks, noise and
        # dropout: with one seed everywhere, every rank would mask its examples exactly as the others do.
        runtime.seed_everything(run_config.seed + rank)
    if start > 0 and rng is not None and len(rng) == world:
        runtime.set_rng_state(rng[rank])                                  # the masks and noise go on as they were
    elif start > 0 and is_main:
        print(f"{stage.kind}: the checkpoint holds no random state for {world} process(es); masks and noise "
              f"continue from a fresh seed")
    batch_size = tcfg.batch_size
    if batch_size > len(dataset) >= world:                                # a small folder trains in full batches
        batch_size = len(dataset) // world * world
        if is_main:
            print(f"{stage.kind}: train_{stage.kind}.batch_size={tcfg.batch_size} is more than the {len(dataset)} "
                  f"training items; using batches of {batch_size}")
    batches = infinite_batches(dataset, batch_size, run_config.seed, stage.device, skip=start * tcfg.grad_accum)
    dtype = runtime.autocast_dtype(stage.device, tcfg.precision)
    runtime.avoid_cudnn_attention(stage.device)
    if is_main:
        print(f"{stage.kind}: {'bf16 autocast' if dtype else 'fp32'} on {stage.device} (precision={tcfg.precision})"
              + ("; torch.compile: the first steps wait for it (a minute on a 2-core CPU)" if compile else ""))
    log = CSVLog(out_dir / f"{stage.kind}_log.csv", resume=resume and start > 0) if is_main else None

    def save(step: int) -> None:
        """Every process calls it (each hands over its random state); the main one writes."""
        rng = runtime.all_rng_states()
        if is_main:
            save_checkpoint(ckpt_path, stage.kind, {
                "config": to_dict(run_config), "step": step, **stage.state(), "ema": ema, "rng": rng,
                "optimizer": {n: o.state_dict() for n, o in optimizers.items()}})

    bar = tqdm(range(start, tcfg.steps), initial=start, total=tcfg.steps, desc=stage.kind,
               disable=not is_main, dynamic_ncols=True)
    t0 = time.perf_counter()
    for step in bar:
        lr = lr_at(step, tcfg)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        totals: dict[str, float] = {}                                     # logged
        checked: dict[str, float] = {}                                    # must be finite for the update
        for _ in range(tcfg.grad_accum):
            batch = next(batches)
            with runtime.autocast(stage.device, dtype):
                losses, metrics = stage.losses(batch, step)
            for name, loss in losses.items():
                (loss / tcfg.grad_accum).backward(inputs=params[name])
                checked[f"loss_{name}"] = checked.get(f"loss_{name}", 0.0) + float(loss.detach())
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + float(v) / tcfg.grad_accum
        if tcfg.grad_clip > 0:
            for name in optimizers:
                gnorm = float(torch.nn.utils.clip_grad_norm_(params[name], tcfg.grad_clip))
                totals[f"gnorm_{name}"] = checked[f"gnorm_{name}"] = gnorm
        stop_if_not_finite(checked, stage.kind, step, ckpt_path)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if ema is not None:
            with torch.no_grad():
                for k, v in stage.model.state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[k].lerp_(v, 1 - tcfg.ema_decay)
                    else:                                         # integer buffers (counts) are copied
                        ema[k].copy_(v)
        if is_main:
            bar.set_postfix({k: f"{v:.3g}" for k, v in totals.items() if not k.startswith("gnorm")})
            if step % tcfg.log_every == 0 or step == tcfg.steps - 1:
                log.write({"step": step, "lr": lr, "time": time.perf_counter() - t0, **totals})
            if (step + 1) % tcfg.sample_every == 0 or step == tcfg.steps - 1:
                stage.sample_grid(out_dir / f"{stage.kind}_samples_{step + 1:06d}.png")
                plot_log(log.path, out_dir / f"{stage.kind}_curves.png")
        if (step + 1) % tcfg.ckpt_every == 0 and step < tcfg.steps - 1:
            save(step + 1)
    bar.close()
    if ema is not None:
        stage.model.load_state_dict(ema)                                  # what we keep and sample from
    if hasattr(stage, "finish"):
        stage.finish(batches)                                             # on the weights that are saved
    save(tcfg.steps)
