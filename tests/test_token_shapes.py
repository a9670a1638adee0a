"""research/token_shapes.py --raster: the MaskGIT blocks trained and sampled as a raster-order model."""
import torch

from minimuse.config import GeneratorConfig
from minimuse.generators.maskgit import MaskedTransformer
from research.token_shapes import raster_loss, raster_sample


def causal_model(**kw) -> MaskedTransformer:
    torch.manual_seed(0)
    return MaskedTransformer(GeneratorConfig(dim=32, depth=2, heads=2, cond_drop=0.0, **kw), 5, 16, 12, causal=True)


def test_raster_loss_predicts_each_token_from_the_ones_before_it():
    model = causal_model(label_smoothing=0.0)
    ids, labels = torch.randint(0, 5, (3, 4, 4)), torch.tensor([0, 5, 11])
    targets = ids.flatten(1)
    inputs = torch.cat([torch.full_like(targets[:, :1], model.mask_id), targets[:, :-1]], dim=1)
    # the loss is the mean next-token NLL of exactly those inputs
    nll = -model.logits(inputs, labels).log_softmax(-1).gather(-1, targets[..., None]).mean()
    assert torch.allclose(raster_loss(model, ids, labels), nll)
    # and the logits of token j do not move when token j itself (or any later one) changes: no peeking
    changed = ids.clone().flatten(1)
    changed[:, 7:] = (changed[:, 7:] + 1) % 5
    changed_inputs = torch.cat([inputs[:, :1], changed[:, :-1]], dim=1)
    before, after = model.logits(inputs, labels), model.logits(changed_inputs, labels)
    assert torch.allclose(before[:, :8], after[:, :8], atol=1e-6)
    assert not torch.allclose(before[:, 8:], after[:, 8:])


def test_raster_sample_is_seeded_and_follows_the_model():
    model = causal_model().eval()
    labels = torch.tensor([1, 2])
    a, b = raster_sample(model, labels, 1.0, seed=3), raster_sample(model, labels, 1.0, seed=3)
    assert a.shape == (2, 4, 4) and torch.equal(a, b)
    # a model whose head always says "token 3" draws all 3s
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0, 0.0]))
    assert (raster_sample(model, labels, 1.0, seed=0) == 3).all()
