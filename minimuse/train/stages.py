"""The two stages a run trains: each owns its models and turns a batch into named losses for `trainer.fit`.

    TokenizerStage   images -> reconstruction + bottleneck + (after disc_start) PatchGAN losses (Taming eq. 5-7)
    GeneratorStage   cached token grids -> the generator's own loss (`Generator.forward`), whatever its kind

A stage gives the trainer: `kind` (its checkpoint's name), `model`, `device`, `param_groups()` (one optimizer
per named loss), `wrap(ddp, compile)`, `losses(batch, step)`, `sample_grid(path)`, `state()` / `load_state()`,
and optionally `finish(batches)`, run once before the final save.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from minimuse.config import RunConfig
from minimuse.eval.metrics import psnr
from minimuse.generators import build_generator
from minimuse.inference import generate
from minimuse.runtime import wrap
from minimuse.tokenizer.autoencoder import Autoencoder
from minimuse.tokenizer.losses import PatchGAN, adaptive_weight, hinge_d_loss, reconstruction_loss
from minimuse.tokenizer.lpips import build_perceptual_loss
from minimuse.viz import save_grid


class TokenizerStage:
    """Tokenizer training (Taming eq. 5-7): L = L_rec + w_p * LPIPS + L_bottleneck + lambda * L_GAN, and the hinge
    loss of the discriminator. The discriminator is built and saved even while its loss is off, so a resumed
    run can switch the GAN on."""

    kind = "tokenizer"

    def __init__(self, cfg: RunConfig, device: torch.device, preview: torch.Tensor):
        self.cfg, self.device = cfg, device
        self.model = Autoencoder(cfg.tokenizer).to(device)
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

    def gan_on(self, step: int) -> bool:
        return self.cfg.tokenizer.disc_start is not None and step >= self.cfg.tokenizer.disc_start

    def losses(self, batch, step: int):
        tok = self.cfg.tokenizer
        images = batch[0]                                                 # (B, 3, H, W)
        rec, q = self.net(images)
        nll = reconstruction_loss(images, rec, tok.rec_loss)
        if self.perceptual is not None:
            nll = nll + tok.perceptual_weight * self.perceptual(images, rec).mean()
        g_loss = nll + q.loss
        metrics = {"loss": nll.detach(), "reg": q.loss.detach(), "psnr": psnr(images, rec.detach()).mean(),
                   **q.stats}
        losses = {}
        if self.gan_on(step):
            gan = -self.disc(rec).mean()       # the raw D: only the D loss below goes through DDP's reducer
            weight = tok.disc_weight * adaptive_weight(nll, gan, self.model.decoder.conv_out.weight)
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
        encoded = torch.cat([self.model.encoder(next(batches)[0]) for _ in range(num_batches)])   # (N, D, h, w)
        self.model.bottleneck.measure_scale(encoded)
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


class GeneratorStage:
    """A generator of any kind on cached token grids, trained through its own loss; samples are decoded by the
    tokenizer."""

    kind = "generator"

    def __init__(self, cfg: RunConfig, device: torch.device, tokenizer: Autoencoder, class_names: list[str]):
        self.cfg, self.device, self.tokenizer, self.class_names = cfg, device, tokenizer, class_names
        self.model = build_generator(cfg, tokenizer, max(1, len(class_names))).to(device)
        self.net = self.model

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"g": list(self.model.parameters())}

    def wrap(self, ddp: bool, compile: bool) -> None:
        self.net = wrap(self.model, ddp, compile)

    def losses(self, batch, step: int):
        tokens, labels = batch                                            # (B, h, w) ids or (B, h, w, C), (B,)
        loss, logs = self.net(tokens, labels)                             # the generator's forward is its loss
        return {"g": loss}, logs

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
