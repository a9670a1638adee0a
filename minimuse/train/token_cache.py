"""The token cache: every training image encoded once, so the generator stage never runs the tokenizer.

`tokens.pt` in the run folder holds the token grids (ids as int16, continuous latents as float16: half the disk,
far below their noise level), the labels, and a key that names the tokenizer and the images it came from; a
cache whose key does not match is encoded again.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from minimuse.checkpoint import atomic_save
from minimuse.runtime import setup_distributed


@torch.no_grad()
def cache_tokens(tokenizer, dataset, path: Path, device: torch.device, batch_size: int = 500):
    """A TensorDataset of (tokens, labels) for every image of `dataset`: read from `path` while it matches this
    tokenizer and these images, else encoded and written there."""
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
        atomic_save(cached, path)                 # a crash mid-write keeps the previous cache
    if world > 1:
        dist.barrier()
    return torch.utils.data.TensorDataset(widen(cached["tokens"]), cached["labels"])


def widen(tokens: torch.Tensor) -> torch.Tensor:
    """Stored tokens back to what the generator takes: int64 ids or float32 latents."""
    return tokens.float() if tokens.dtype.is_floating_point else tokens.long()


def fingerprint(model: nn.Module) -> float:
    """A cheap identity for a set of weights: their sum (changes whenever the tokenizer is retrained)."""
    return float(sum(p.double().sum() for p in model.state_dict().values() if p.dtype.is_floating_point))


def data_fingerprint(dataset) -> float:
    """A cheap identity for a dataset: the pixel sums of its first and last images (they change with the data's
    seed, its resolution or its files)."""
    return float(sum(dataset[i][0].double().sum() for i in (0, len(dataset) - 1)))
