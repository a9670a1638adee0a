import math

import pytest
import torch
import torch.nn.functional as F

from minimuse.config import GeneratorConfig, SamplerConfig
from minimuse.generators.maskgit import MaskedTransformer, masked_token_loss


def tiny_model(codebook=8, side=4, classes=4, **kw) -> MaskedTransformer:
    torch.manual_seed(0)
    cfg = GeneratorConfig(**{"dim": 64, "depth": 2, "heads": 4, "label_smoothing": 0.0, "cond_drop": 0.0, **kw})
    return MaskedTransformer(cfg, codebook, side * side, classes)


def test_masked_inputs_carry_the_mask_id_and_the_rest_is_untouched():
    model = tiny_model()
    ids = torch.randint(0, 8, (16, 4, 4))
    inputs, targets, mask = model.mask_tokens(ids, torch.Generator().manual_seed(0))
    assert model.mask_id == 8 and model.mask_id >= model.codebook_size   # special id above the codebook
    assert (inputs[mask] == model.mask_id).all()
    assert (inputs[~mask] == targets[~mask]).all() and (targets == ids.flatten(1)).all()
    assert (inputs != model.mask_id).sum() == (~mask).sum()     # no stray masks at visible positions


def test_mask_tokens_at_a_fixed_rate_masks_that_share_of_every_row():
    model = tiny_model()
    ids = torch.randint(0, 8, (16, 4, 4))
    inputs, _, mask = model.mask_tokens(ids, torch.Generator().manual_seed(0), rate=0.25)
    assert mask.sum(1).tolist() == [4] * 16                      # ceil(0.25 * 16) in every row
    assert (inputs[mask] == model.mask_id).all() and len(mask.float().sum(0).unique()) > 1   # not the same positions


def test_loss_ignores_logits_at_unmasked_positions():
    logits = torch.randn(4, 16, 8)
    targets = torch.randint(0, 8, (4, 16))
    mask = torch.rand(4, 16) < 0.5
    changed = logits.clone()
    changed[~mask] = torch.randn_like(changed[~mask]) * 100
    assert torch.equal(masked_token_loss(logits, targets, mask), masked_token_loss(changed, targets, mask))
    # ...and it is the mean cross-entropy over exactly the masked positions
    assert torch.allclose(masked_token_loss(logits, targets, mask), F.cross_entropy(logits[mask], targets[mask]))
    changed = logits.clone()
    changed[mask] += torch.randn_like(changed[mask])
    assert not torch.equal(masked_token_loss(logits, targets, mask), masked_token_loss(changed, targets, mask))


def test_logits_shapes_and_null_class():
    model = tiny_model()
    logits = model.logits(torch.full((3, 16), model.mask_id), torch.tensor([0, 3, model.null_class]))
    assert logits.shape == (3, 16, 8) and model.null_class == 4


def test_forward_is_the_training_loss_on_the_masked_tokens():
    model = tiny_model()
    tokens, labels = torch.randint(0, 8, (6, 4, 4)), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.manual_seed(1)
    loss, logs = model(tokens, labels)
    assert loss.ndim == 0 and set(logs) == {"loss", "acc"} and 0 <= logs["acc"] <= 1
    torch.manual_seed(1)                                        # the same masks, by hand
    inputs, targets, mask = model.mask_tokens(tokens)
    expected = masked_token_loss(model.logits(inputs, labels), targets, mask)    # cond_drop = 0: labels kept
    torch.testing.assert_close(loss, expected)
    torch.manual_seed(1)
    assert torch.equal(model.loss(tokens, labels)[0], loss)     # `loss` is the same call, by name
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_adaln_zero_starts_blind_to_the_class_and_learns_to_read_it():
    """adaLN-Zero (DiT §3.2): the modulation starts at zero, so a fresh model ignores the class (there is no
    prefix token either); a few gradient steps on class-dependent grids make the logits depend on it."""
    model = tiny_model(class_cond="adaln")
    assert model.prefix == 0 and model.pos_emb.shape[1] == 16
    ids, labels = torch.full((2, 16), model.mask_id), torch.tensor([0, 1])
    fresh = model.logits(ids, labels)
    assert torch.allclose(fresh[0], fresh[1])
    grids = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)]).long()               # class k -> all k
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        inputs, targets, mask = model.mask_tokens(grids)
        loss = masked_token_loss(model.logits(inputs, labels), targets, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = model.logits(ids, labels)
    assert not torch.allclose(trained[0], trained[1], atol=1e-4)
    assert trained[0, :, 0].mean() > trained[1, :, 0].mean()                        # class 0 leans to token 0


def test_token_conditioning_is_a_prefix_token_and_an_unknown_kind_is_an_error():
    model = tiny_model(class_cond="token")
    assert model.prefix == 1 and model.pos_emb.shape[1] == 17 and all(b.ada is None for b in model.blocks)
    logits = model.logits(torch.full((2, 16), model.mask_id), torch.tensor([0, 1]))
    assert logits.shape == (2, 16, 8) and not torch.allclose(logits[0], logits[1])
    with pytest.raises(ValueError, match="class_cond"):
        tiny_model(class_cond="film")


def test_causal_mode_does_not_look_ahead():
    torch.manual_seed(0)
    model = MaskedTransformer(GeneratorConfig(dim=32, depth=2, heads=2), 8, 16, 2, causal=True).eval()
    a = torch.randint(0, 8, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 8
    la, lb = model.logits(a, torch.tensor([1])), model.logits(b, torch.tensor([1]))
    assert torch.allclose(la[0, :10], lb[0, :10], atol=1e-5) and not torch.allclose(la[0, 10:], lb[0, 10:])


def test_overfits_a_handful_of_token_grids():
    """Four 4x4 grids, one per class: after training, sampling class k reproduces grid k exactly."""
    model = tiny_model()
    grids = torch.randint(0, 8, (4, 4, 4), generator=torch.Generator().manual_seed(1))
    labels = torch.arange(4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        inputs, targets, mask = model.mask_tokens(grids.repeat(8, 1, 1))
        loss = masked_token_loss(model.logits(inputs, labels.repeat(8)), targets, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    out = model.sample(labels, SamplerConfig(steps=4, temperature=0.1), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, grids)
