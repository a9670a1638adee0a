"""Generators: models of a token grid given a condition, one kind per file, all behind one interface (`base.py`).

    maskgit.py          MaskedTransformer: masked-token cross-entropy, iterative parallel decoding (MaskGIT, Muse)
    parallel_decode.py  the decoding loop MaskGIT samples with (start reading here)
    mar.py              MAR: masked autoregression over continuous tokens with ...
    diffusion.py        ... a per-token diffusion MLP head

A new kind is a file with a `Generator` subclass and one line in `GENERATORS`; the trainer, the pipeline and the
CLIs never ask which kind they hold.
"""
from __future__ import annotations

from minimuse.config import RunConfig
from minimuse.generators.base import Generator
from minimuse.generators.mar import MAR
from minimuse.generators.maskgit import MaskedTransformer

GENERATORS: dict[str, type[Generator]] = {
    "maskgit": MaskedTransformer,
    "mar": MAR,
}


def build_generator(cfg: RunConfig, tokenizer, num_classes: int) -> Generator:
    """A fresh generator of kind `cfg.generator.kind` over the token grid of `tokenizer` (an `Autoencoder`), with
    a clear error when the kind is unknown or models the other kind of token."""
    kind = cfg.generator.kind
    if kind not in GENERATORS:
        raise ValueError(f"unknown generator.kind {kind!r}; choose one of: {', '.join(GENERATORS)}")
    cls = GENERATORS[kind]
    if (cls.token_kind == "ids") != tokenizer.discrete:
        wanted = "a VQ tokenizer (tokenizer.bottleneck=vq)" if cls.token_kind == "ids" else \
            "a continuous tokenizer (tokenizer.bottleneck=kl or plain)"
        raise ValueError(f"generator.kind={kind} needs {wanted}")
    side = cfg.data.resolution // tokenizer.f
    token_size = tokenizer.cfg.codebook_size if tokenizer.discrete else tokenizer.cfg.token_dim
    return cls(cfg.generator, token_size, side * side, num_classes)
