"""research/oracle_sampler.py: the exact conditionals of jitter-free Shapes, on a coarse enumeration."""
import pytest
import torch

from minimuse.config import SamplerConfig
from minimuse.data.shapes import ShapeAttributes, shape_mask
from research.generator_probe import label_nll
from research.oracle_sampler import ExactShapes, enumerate_grids, sample_data


@pytest.fixture(scope="module")
def oracle():
    return ExactShapes(grid=4, patch=4, sides=4, positions=6)


def test_enumerated_grids_redraw_the_dataset_images():
    grids, weights, patterns = enumerate_grids(shape=1, grid=4, patch=4, sides=2, positions=3)
    assert weights.sum() == pytest.approx(1.0)
    assert not patterns[0].any()                                          # pattern 0 is the empty patch
    # one of the enumerated draws (u_side = 0.75, centred), rendered by the dataset itself: its grid is there
    side = 16 / 4 + 0.75 * 16 / 4
    cx = cy = side / 2 + 0.5 * (16 - side)
    mask = shape_mask(ShapeAttributes(16, 1, 0, side, cx, cy, (0, 0, 0), (0, 0, 0)))
    tokens = torch.from_numpy(mask).unfold(0, 4, 4).unfold(1, 4, 4).reshape(16, 16)      # (L, P*P) patches
    as_ids = [int((torch.from_numpy(patterns) == t).all(1).nonzero()) for t in tokens]
    assert any((torch.from_numpy(g) == torch.tensor(as_ids)).all() for g in grids)


def test_conditionals_are_exact_bayes(oracle):
    labels = torch.tensor([4, 9])                                          # red square, green triangle
    grids = sample_data(oracle, labels).flatten(1)                         # (2, L)
    probs = oracle.logits(grids, labels).exp()
    assert probs.sum(-1) == pytest.approx(torch.ones(2, oracle.seq_len), abs=1e-5)
    # with one token hidden and the rest of a real grid visible, only the true token fits
    for i in range(oracle.seq_len):
        hidden = grids.clone()
        hidden[:, i] = oracle.mask_id
        p = oracle.logits(hidden, labels).exp()[torch.arange(2), i, grids[:, i]]
        assert (p > 0.99).all(), i
    # nothing visible: the null class is the even mixture of the twelve, so every colour is equally likely
    empty = torch.full((1, oracle.seq_len), oracle.mask_id)
    p = oracle.logits(empty, torch.tensor([oracle.null_class])).exp()[0]
    by_colour = torch.stack([p[:, 1 + c::oracle.colours].sum() for c in range(oracle.colours)])
    assert by_colour == pytest.approx(by_colour.mean().expand(4), rel=1e-4)


def test_one_token_per_step_draws_only_real_grids(oracle):
    labels = torch.arange(12)
    ids = oracle.sample(labels, SamplerConfig(steps=oracle.seq_len), generator=torch.Generator().manual_seed(0))
    for row, label in zip(ids.flatten(1), labels.tolist()):
        shape, colour = divmod(label, oracle.colours)
        pattern, colours = oracle.patterns_and_colours(row)
        assert ((row == 0) | (colours == colour)).all()
        assert (oracle.grids[shape] == pattern).all(1).any()
    images = oracle.decode(ids)
    assert images.shape == (12, 3, 32, 32) and images.min() >= -1 and images.max() <= 1


def test_the_probes_run_on_the_oracle(oracle):
    """label_nll masks grids with the transformer's own masking; on the exact conditionals, a class whose shape
    contradicts the visible tokens costs far more than the true one, and the null class lies in between."""
    labels = torch.arange(12)
    grids = sample_data(oracle, labels)                                   # (12, 4, 4)
    inputs, targets, mask = oracle.mask_tokens(grids, torch.Generator().manual_seed(0), 0.5)
    assert (inputs[mask] == oracle.mask_id).all() and torch.equal(inputs[~mask], targets[~mask])
    true, other_shape, null = label_nll(oracle, grids, labels, 0.5)
    assert true < null < other_shape and other_shape > true + 1
