"""Class conditioning and classifier-free guidance (minimuse.conditioning)."""
import math

import pytest
import torch

from minimuse.conditioning import ClassEmbedding, cfg_mix, drop_labels, guidance_at


def test_cfg_mix_is_the_muse_formula_and_zero_is_the_conditional_output():
    cond, uncond = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    assert torch.equal(cfg_mix(cond, uncond, 0.0), cond)
    assert torch.allclose(cfg_mix(cond, uncond, 2.0), 3 * cond - 2 * uncond)


def test_guidance_ramp():
    assert [guidance_at(t, 5, 2.0) for t in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [guidance_at(t, 5, 2.0, "constant") for t in range(5)] == [2.0] * 5
    assert guidance_at(0, 1, 2.0) == 2.0                           # one step: the full scale
    with pytest.raises(ValueError, match="linear or constant"):
        guidance_at(0, 4, 2.0, "cosine")


def test_the_realised_drop_rate_is_p_within_three_sigma():
    """The label dropout must drop with probability p, not 1 - p (two published trainers shipped it inverted)."""
    n, p = 100_000, 0.1
    dropped = drop_labels(torch.zeros(n, dtype=torch.long), p, null_class=4, generator=torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 4}
    rate, sigma = (dropped == 4).float().mean().item(), math.sqrt(p * (1 - p) / n)
    assert abs(rate - p) < 3 * sigma


def test_class_embedding_has_a_learned_null_row_and_drops_to_it():
    torch.manual_seed(0)
    embed = ClassEmbedding(num_classes=3, dim=8, drop_prob=0.5)
    labels = torch.tensor([0, 1, 2, 1])
    assert embed.weight.shape == (4, 8) and embed.null_class == 3
    assert embed(labels).shape == (4, 8) and not torch.equal(embed.weight[3], embed.weight[0])
    dropped = embed.drop(torch.zeros(10_000, dtype=torch.long))
    assert set(dropped.unique().tolist()) == {0, 3} and abs((dropped == 3).float().mean() - 0.5) < 0.03
