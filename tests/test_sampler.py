import math

import pytest
import torch

import minimuse.sampler as sampler
from minimuse.config import GeneratorConfig, SamplerConfig
from minimuse.mar import MAR
from minimuse.sampler import (cfg_mix, choice_temperature_at, generate, guidance_at, mask_schedule, maskgit_sample,
                              num_masked_after, top_k_filter)
from minimuse.transformer import MaskedTransformer


class FakeModel:
    """Stands in for a MaskedTransformer: random logits (or a fixed favourite token), counting its calls."""

    def __init__(self, seq_len=16, codebook=10, classes=3, favourite=None):
        self.seq_len, self.codebook_size, self.mask_id, self.null_class = seq_len, codebook, codebook, classes
        self.favourite, self.calls, self.training = favourite, [], False
        self.weights = torch.randn(classes + 1, seq_len, codebook, generator=torch.Generator().manual_seed(0))

    def __call__(self, ids, labels):
        self.calls.append(len(ids))
        assert ids.shape == (len(labels), self.seq_len)
        if self.favourite is not None:
            logits = torch.zeros(len(ids), self.seq_len, self.codebook_size)
            logits[..., self.favourite] = 20.0
            return logits
        return self.weights[labels] * 3 + (ids != self.mask_id).float()[..., None]


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
def test_masked_count_follows_the_schedule_exactly(schedule, steps):
    model, history = FakeModel(seq_len=64), []
    maskgit_sample(model, torch.tensor([0, 1]), steps, schedule=schedule, generator=torch.Generator().manual_seed(0),
                   history=history)
    counts = [masked.flatten(1).sum(1).tolist() for _, masked in history]
    assert counts == [[n, n] for n in expected_masked(64, steps, schedule)]


def test_schedule_keeps_one_token_masked_until_the_last_step():
    counts = expected_masked(64, 24)
    assert all(c >= 1 for c in counts[:-1]) and counts[-1] == 0
    assert all(a > b for a, b in zip([64] + counts, counts))       # every step decodes at least one token
    # more steps than tokens: the count can stall at 1 but never goes up or to zero early
    n = num_masked_after(2, 10, torch.tensor([4]), torch.tensor([1]))
    assert n.item() == 1


def test_decoded_tokens_never_change():
    model, history = FakeModel(seq_len=64), []
    final = maskgit_sample(model, torch.tensor([0, 1, 2]), 8, choice_temperature=10.0,
                           generator=torch.Generator().manual_seed(3), history=history)
    for (ids_a, masked_a), (ids_b, _) in zip(history, history[1:]):
        kept = ~masked_a
        assert torch.equal(ids_a[kept], ids_b[kept])
    assert torch.equal(final, history[-1][0]) and (final != model.mask_id).all()


def test_a_model_that_always_predicts_k_yields_all_k():
    out = maskgit_sample(FakeModel(favourite=7), torch.tensor([0, 2]), 8, cfg=3.0,
                         generator=torch.Generator().manual_seed(0))
    assert (out == 7).all() and out.shape == (2, 4, 4)


def test_cfg_zero_is_the_conditional_output_and_runs_one_batched_forward():
    cond, uncond = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    assert torch.equal(cfg_mix(cond, uncond, 0.0), cond)
    assert torch.allclose(cfg_mix(cond, uncond, 2.0), 3 * cond - 2 * uncond)
    model = FakeModel()
    maskgit_sample(model, torch.tensor([0, 1]), 6, cfg=2.0, cfg_schedule="constant")
    assert model.calls == [4] * 6                                 # cond + uncond in one forward per step
    model = FakeModel()
    maskgit_sample(model, torch.tensor([0, 1]), 6, cfg=0.0)
    assert model.calls == [2] * 6


def test_guidance_ramp():
    assert [guidance_at(t, 5, 2.0) for t in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [guidance_at(t, 5, 2.0, "constant") for t in range(5)] == [2.0] * 5


def test_choice_temperature_at_each_step_equals_its_formula(monkeypatch):
    seen = []
    real = sampler.choice_temperature_at
    monkeypatch.setattr(sampler, "choice_temperature_at", lambda t, T, base: seen.append(real(t, T, base)) or seen[-1])
    maskgit_sample(FakeModel(), torch.tensor([0]), 8, choice_temperature=4.5)
    assert seen == pytest.approx([4.5 * (1 - (t + 1) / 8) for t in range(8)])   # linear, never compounding
    assert choice_temperature_at(7, 8, 4.5) == 0.0


def test_same_seed_same_samples_and_different_seed_different_samples():
    model = FakeModel(seq_len=64)
    a = maskgit_sample(model, torch.tensor([0, 1]), 8, generator=torch.Generator().manual_seed(5))
    b = maskgit_sample(model, torch.tensor([0, 1]), 8, generator=torch.Generator().manual_seed(5))
    c = maskgit_sample(model, torch.tensor([0, 1]), 8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_inpainting_keeps_known_tokens():
    model = FakeModel()
    init = torch.full((1, 4, 4), model.mask_id)
    init[0, :2] = 3                                               # the top half is given
    history = []
    out = maskgit_sample(model, torch.tensor([1]), 4, init_ids=init, history=history)
    assert (out[0, :2] == 3).all() and (out != model.mask_id).all()
    assert history[0][1].sum() == expected_masked(8, 4)[0]        # the schedule runs over the 8 unknown tokens


def test_top_k_filter():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, False, True, False]]
    assert torch.equal(top_k_filter(logits, 0), logits)


class IdentityTokenizer:
    """Decodes token ids to themselves, so a test can read back what `generate` sampled."""

    def decode(self, tokens):
        return tokens


def test_generate_inpaints_from_init_ids_and_keeps_them():
    model = MaskedTransformer(GeneratorConfig(dim=32, depth=1, heads=2), 8, 16, 2)
    init = torch.full((2, 4, 4), model.mask_id)
    init[:, :, 0] = 5                                             # the left column is given
    out = generate(model, IdentityTokenizer(), torch.tensor([0, 1]), SamplerConfig(steps=4), init_ids=init)
    assert (out[:, :, 0] == 5).all() and (out < model.mask_id).all()


def test_generate_refuses_init_ids_for_mar():
    model = MAR(GeneratorConfig(kind="mar", dim=32, depth=1, heads=2, decoder_depth=1, diff_width=32, diff_depth=1),
                4, 16, 2)
    with pytest.raises(ValueError, match="MaskGIT"):
        generate(model, IdentityTokenizer(), torch.tensor([0]), SamplerConfig(steps=2),
                 init_ids=torch.zeros(1, 4, 4, dtype=torch.long))
