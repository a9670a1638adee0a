"""Iterative parallel decoding (minimuse.generators.parallel_decode) and MaskGIT's sampling through it."""
import pytest
import torch

import minimuse.generators.parallel_decode as decoding
from minimuse.config import GeneratorConfig, SamplerConfig
from minimuse.generators.mar import MAR
from minimuse.generators.maskgit import MaskedTransformer
from minimuse.generators.parallel_decode import choice_temperature_at, parallel_decode, top_k_filter
from minimuse.inference import generate
from minimuse.masking import num_masked_after
from tests.test_masking import expected_masked

MASK = 10                                                         # the fakes' [MASK] id, above codebook 0..9


class FakeLogits:
    """Stands in for a generator's guided logits: fixed random logits per (row, position) that also favour what is
    already decoded (or always one favourite token); records the guidance scales it is asked for."""

    def __init__(self, rows: int, seq_len: int = 16, codebook: int = 10, favourite: int | None = None):
        self.seq_len, self.codebook, self.favourite, self.scales = seq_len, codebook, favourite, []
        self.weights = torch.randn(rows, seq_len, codebook, generator=torch.Generator().manual_seed(0))

    def __call__(self, ids: torch.Tensor, scale: float) -> torch.Tensor:
        self.scales.append(scale)
        if self.favourite is not None:
            logits = torch.zeros(len(ids), self.seq_len, self.codebook)
            logits[..., self.favourite] = 20.0
            return logits
        return self.weights[: len(ids)] * 3 + (ids != MASK).float()[..., None]


def decode(fake: FakeLogits, rows: int, sampler: SamplerConfig, seed: int = 0, init=None, history=None):
    side = int(fake.seq_len ** 0.5)
    init = torch.full((rows, side, side), MASK) if init is None else init
    return parallel_decode(fake, init, MASK, sampler, generator=torch.Generator().manual_seed(seed), history=history)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "cubic"])
@pytest.mark.parametrize("steps", [1, 8, 24, 64])
def test_masked_count_follows_the_schedule_exactly(schedule, steps):
    history = []
    decode(FakeLogits(2, seq_len=64), 2, SamplerConfig(steps=steps, schedule=schedule), history=history)
    counts = [masked.flatten(1).sum(1).tolist() for _, masked in history]
    assert counts == [[n, n] for n in expected_masked(64, steps, schedule)]


def test_decoded_tokens_never_change():
    fake, history = FakeLogits(3, seq_len=64), []
    final = decode(fake, 3, SamplerConfig(choice_temperature=10.0), seed=3, history=history)
    for (ids_a, masked_a), (ids_b, _) in zip(history, history[1:]):
        kept = ~masked_a
        assert torch.equal(ids_a[kept], ids_b[kept])
    assert torch.equal(final, history[-1][0]) and (final != MASK).all()


def test_a_model_that_always_predicts_k_yields_all_k():
    out = decode(FakeLogits(2, favourite=7), 2, SamplerConfig(guidance=3.0))
    assert (out == 7).all() and out.shape == (2, 4, 4)


def test_each_step_asks_for_the_ramped_guidance():
    fake = FakeLogits(2)
    decode(fake, 2, SamplerConfig(steps=5, guidance=2.0, guidance_schedule="linear"))
    assert fake.scales == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_choice_temperature_at_each_step_equals_its_formula(monkeypatch):
    seen = []
    real = decoding.choice_temperature_at
    monkeypatch.setattr(decoding, "choice_temperature_at", lambda t, T, base: seen.append(real(t, T, base)) or seen[-1])
    decode(FakeLogits(1), 1, SamplerConfig(steps=8, choice_temperature=4.5))
    assert seen == pytest.approx([4.5 * (1 - (t + 1) / 8) for t in range(8)])   # linear, never compounding
    assert choice_temperature_at(7, 8, 4.5) == 0.0


def test_same_seed_same_samples_and_different_seed_different_samples():
    fake = FakeLogits(2, seq_len=64)
    a, b, c = (decode(fake, 2, SamplerConfig(), seed=s) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_inpainting_keeps_known_tokens():
    init = torch.full((1, 4, 4), MASK)
    init[0, :2] = 3                                               # the top half is given
    history = []
    out = decode(FakeLogits(1), 1, SamplerConfig(steps=4), init=init, history=history)
    assert (out[0, :2] == 3).all() and (out != MASK).all()
    assert history[0][1].sum() == expected_masked(8, 4)[0]        # the schedule runs over the 8 unknown tokens


def test_top_k_filter():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, False, True, False]]
    assert torch.equal(top_k_filter(logits, 0), logits)


# ---------------------------------------------------------------------------------------------------------
# Through a real MaskedTransformer
# ---------------------------------------------------------------------------------------------------------

def tiny_maskgit() -> MaskedTransformer:
    torch.manual_seed(0)
    return MaskedTransformer(GeneratorConfig(dim=32, depth=1, heads=2), 8, 16, 2).eval()


def test_guidance_runs_cond_and_null_as_one_batched_forward(monkeypatch):
    model, batches = tiny_maskgit(), []
    real = model.logits
    monkeypatch.setattr(model, "logits", lambda ids, labels: batches.append(labels.tolist()) or real(ids, labels))
    model.sample(torch.tensor([0, 1]), SamplerConfig(steps=3, guidance=2.0, guidance_schedule="constant"))
    assert batches == [[0, 1, 2, 2]] * 3                          # cond rows, then the null class, in one forward
    batches.clear()
    model.sample(torch.tensor([0, 1]), SamplerConfig(steps=3, guidance=0.0))
    assert batches == [[0, 1]] * 3


class IdentityTokenizer:
    """Decodes token ids to themselves, so a test can read back what `generate` sampled."""

    def decode(self, tokens):
        return tokens


def test_generate_inpaints_from_init_ids_and_keeps_them():
    model = tiny_maskgit()
    init = torch.full((2, 4, 4), model.mask_id)
    init[:, :, 0] = 5                                             # the left column is given
    out = generate(model, IdentityTokenizer(), torch.tensor([0, 1]), SamplerConfig(steps=4), init_ids=init)
    assert (out[:, :, 0] == 5).all() and (out < model.mask_id).all()


def test_generate_refuses_init_ids_for_mar():
    cfg = GeneratorConfig(kind="mar", dim=32, depth=1, heads=2, decoder_depth=1)
    cfg.head.width, cfg.head.depth = 32, 1
    model = MAR(cfg, 4, 16, 2)
    with pytest.raises(ValueError, match="MaskGIT"):
        generate(model, IdentityTokenizer(), torch.tensor([0]), SamplerConfig(steps=2),
                 init_ids=torch.zeros(1, 4, 4, dtype=torch.long))



def test_given_tokens_never_change_even_in_a_row_with_nothing_left_to_decode():
    """A row of init_ids with no [MASK] left must come back untouched (the schedule's 'keep one masked until the
    last step' must not re-mask a given token), and so must the given half of a partly masked row."""
    given = torch.randint(0, 10, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    init = given.clone()
    init[1, 2:] = MASK                                            # row 1: the bottom half to decode
    for seed in range(50):
        out = decode(FakeLogits(2, favourite=7), 2, SamplerConfig(steps=8), seed=seed, init=init)
        assert torch.equal(out[0], given[0]) and torch.equal(out[1, :2], given[1, :2]), seed
        assert (out[1, 2:] == 7).all()


def test_num_masked_after_is_zero_for_a_row_with_nothing_masked():
    n = num_masked_after(0, 8, total=torch.tensor([0, 16]), masked_now=torch.tensor([0, 16]))
    assert n.tolist() == [0, 15]
