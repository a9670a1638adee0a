"""The masks of training and the counts of decoding (minimuse.masking), pinned to their formulas."""
import math

import pytest
import torch

from minimuse.masking import (mask_by_order, mask_schedule, num_masked_after, random_mask, random_orders,
                              sample_mask_rates, sample_mask_ratio)


def expected_masked(total, steps, schedule="cosine"):
    """The schedule written out longhand: floor(N * gamma((t+1)/T)), below the previous count, >= 1 until the
    last step."""
    counts, prev = [], total
    for t in range(steps):
        n = 0 if t == steps - 1 else max(1, min(prev - 1, math.floor(total * mask_schedule(schedule)((t + 1) / steps))))
        counts.append(n)
        prev = n
    return counts


@pytest.mark.parametrize("schedule", ["cosine", "linear", "sqrt", "square", "cubic"])
@pytest.mark.parametrize("steps", [1, 4, 8, 12, 24, 64])
def test_num_masked_after_follows_the_schedule_exactly(schedule, steps):
    now, counts = torch.tensor([64, 64]), []
    for t in range(steps):
        now = num_masked_after(t, steps, torch.tensor([64, 64]), now, schedule)
        counts.append(now.tolist())
    assert counts == [[n, n] for n in expected_masked(64, steps, schedule)]


def test_schedule_keeps_one_token_masked_until_the_last_step():
    counts = expected_masked(64, 24)
    assert all(c >= 1 for c in counts[:-1]) and counts[-1] == 0
    assert all(a > b for a, b in zip([64] + counts, counts))       # every step decodes at least one token
    # more steps than tokens: the count can stall at 1 but never goes up or to zero early
    n = num_masked_after(2, 10, torch.tensor([4]), torch.tensor([1]))
    assert n.item() == 1


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="cosine, linear"):
        mask_schedule("exponential")


def test_mask_rate_follows_the_arccos_density():
    r = sample_mask_rates(200_000, torch.Generator().manual_seed(0))
    assert abs(r.mean().item() - 2 / math.pi) < 0.005          # E[cos(pi/2 u)] = 2/pi ~ 0.64
    # CDF of r = cos(pi/2 u) is P(r <= x) = 1 - 2/pi * arccos(x)
    for x in (0.25, 0.5, 0.9):
        assert abs((r <= x).float().mean().item() - (1 - 2 / math.pi * math.acos(x))) < 0.01


def test_number_of_masked_positions_matches_the_rate():
    rates = torch.tensor([0.0, 0.01, 0.5, 0.64, 0.99, 1.0])
    mask = random_mask(rates, 64, torch.Generator().manual_seed(0))
    expected = torch.ceil(rates * 64).clamp(1, 64)
    assert mask.sum(1).tolist() == expected.long().tolist()      # at least one token is always masked


def test_random_mask_is_the_first_n_of_a_random_order():
    rates = torch.tensor([0.25, 0.75])
    mask = random_mask(rates, 16, torch.Generator().manual_seed(3))
    orders = random_orders(2, 16, torch.Generator().manual_seed(3))
    assert torch.equal(mask, mask_by_order(orders, torch.tensor([4, 12])))


def test_mask_by_order_masks_the_first_of_each_order():
    orders = torch.tensor([[3, 0, 2, 1], [0, 1, 2, 3]])
    assert mask_by_order(orders, torch.tensor([2, 1])).tolist() == [[True, False, False, True],
                                                                    [True, False, False, False]]
    assert mask_by_order(orders, torch.tensor([1, 3])).tolist() == [[False, False, False, True],
                                                                    [True, True, True, False]]
    assert sorted(random_orders(1, 16, torch.Generator().manual_seed(0))[0].tolist()) == list(range(16))


def test_mar_training_mask_ratio_stays_in_range_and_leans_to_one():
    g = torch.Generator().manual_seed(0)
    ratios = torch.tensor([sample_mask_ratio(0.7, g) for _ in range(5000)])
    assert ratios.min() >= 0.7 and ratios.max() <= 1.0
    # a normal centred at 1 truncated to [0.7, 1]: density rises towards 1, mean ~0.87
    assert 0.85 < ratios.mean() < 0.89 and (ratios > 0.85).float().mean() > 0.5
