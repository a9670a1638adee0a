import pytest
import torch

from minimuse.config import DiffusionHeadConfig, GeneratorConfig, SamplerConfig
from minimuse.generators.mar import MAR
from minimuse.masking import mask_by_order, num_masked_after, random_orders


def tiny_mar(**kw) -> MAR:
    torch.manual_seed(0)
    cfg = GeneratorConfig(**{"kind": "mar", "dim": 32, "depth": 1, "heads": 2, "decoder_depth": 1,
                             "buffer_tokens": 2, "head": DiffusionHeadConfig(width=32, depth=1, sample_steps=10),
                             **kw})
    return MAR(cfg, token_dim=4, seq_len=16, num_classes=3)


def test_encoder_sees_the_buffer_and_the_visible_tokens_only():
    model = tiny_mar().eval()
    tokens, labels = torch.randn(2, 16, 4), torch.tensor([0, 2])
    mask = mask_by_order(random_orders(2, 16, torch.Generator().manual_seed(1)), torch.tensor([10, 10]))
    out = model.encode(tokens, mask, labels)
    assert out.shape == (2, 2 + 6, 32)                             # buffer + visible
    changed = tokens.clone()
    changed[mask] = torch.randn_like(changed[mask]) * 10           # what is masked cannot matter
    assert torch.allclose(model.encode(changed, mask, labels), out, atol=1e-6)
    changed[~mask] += 1.0                                          # what is visible does
    assert not torch.allclose(model.encode(changed, mask, labels), out)
    z = model.decode(out, mask, labels)
    assert z.shape == (2, 16, 32)


def test_the_class_modulates_every_block_with_adaln_and_only_the_buffer_without():
    adaln, token = tiny_mar().eval(), tiny_mar(class_cond="token").eval()
    assert all(b.ada is not None for b in [*adaln.encoder, *adaln.decoder])
    assert all(b.ada is None for b in [*token.encoder, *token.decoder])
    assert token.load_state_dict(adaln.state_dict(), strict=False).unexpected_keys   # adaLN's own weights


def test_local_conv_goes_in_the_decoder_only_and_starts_as_the_plain_model():
    plain, conv = tiny_mar().eval(), tiny_mar(local_conv=True).eval()
    assert all(b.local is None for b in conv.encoder)                # the encoder sees visible tokens, no grid
    assert all(b.local.side == 4 for b in conv.decoder)
    missing = conv.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".local." in k for k in missing)           # only the convs are new, still zero
    tokens, labels = torch.randn(2, 16, 4), torch.tensor([0, 2])
    mask = mask_by_order(random_orders(2, 16, torch.Generator().manual_seed(1)), torch.tensor([10, 10]))
    assert torch.allclose(conv.conditions(tokens, mask, labels), plain.conditions(tokens, mask, labels), atol=1e-6)


@pytest.mark.parametrize("class_cond, reached", [("token", [False, False, True, True]),
                                                  ("adaln", [False, False, False, True])])
def test_training_loss_reaches_the_transformer_once_the_head_listens(class_cond, reached):
    model = tiny_mar(class_cond=class_cond)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tokens, labels = torch.randn(4, 4, 4, 4), torch.tensor([0, 1, 2, 0])
    reaches = []
    for _ in range(4):
        opt.zero_grad()
        loss, logs = model(tokens, labels)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss) and set(logs) == {"loss"}
        reaches.append(all(p.grad is not None and p.grad.abs().sum() > 0
                           for p in (model.head_pos, model.cls_emb.weight, model.enc_pos)))
        opt.step()
    # AdaLN-Zero in the head: it ignores z until its output layer and then its modulations have moved off zero.
    # With adaLN-Zero in the blocks too, the decoder starts as the identity: a masked position's z is its mask
    # embedding alone until the gates open, one step later, and only then reaches the encoder and the class.
    assert reaches == reached


def test_a_training_step_under_bf16_autocast_matches_fp32():
    """tiny-mar trains under bf16 autocast where the CPU has bf16 matmuls (precision "auto"): the diffusion loss
    must come out as in fp32 up to bf16 rounding, with finite gradients everywhere."""
    model = tiny_mar(local_conv=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tokens, labels = torch.randn(4, 4, 4, 4), torch.tensor([0, 1, 2, 0])
    for _ in range(3):                           # open the adaLN-Zero gates, so every block is in the loss
        opt.zero_grad()
        model(tokens, labels)[0].backward()
        opt.step()
    losses = []
    for bf16 in (False, True):
        torch.manual_seed(1)                     # the same mask ratio, orders, timesteps and noise
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(tokens, labels)[0]
        model.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=0.03)


def test_sampling_reveals_at_least_one_token_per_step_and_all_by_the_end():
    model = tiny_mar().eval()
    for steps, guidance in [(4, 0.0), (16, 2.0), (20, 1.0)]:
        history = []
        out = model.sample(torch.tensor([0, 1]), SamplerConfig(steps=steps, guidance=guidance),
                           generator=torch.Generator().manual_seed(0), history=history)
        masked = [m.flatten(1).sum(1) for _, m in history]
        expected, now = [], torch.tensor([16, 16])
        for t in range(steps):
            now = num_masked_after(t, steps, torch.tensor([16, 16]), now)
            expected.append(now)
        assert [m.tolist() for m in masked] == [e.tolist() for e in expected]
        counts = [16] + [m[0].item() for m in masked]
        revealed = [a - b for a, b in zip(counts, counts[1:])]
        assert (min(revealed) >= 1 or steps > 16) and counts[-1] == 0
        assert out.shape == (2, 4, 4, 4) and torch.isfinite(out).all()
        for (a, ma), (b, _) in zip(history, history[1:]):          # revealed tokens are final
            assert torch.equal(a[~ma], b[~ma])


def test_same_seed_same_samples():
    model = tiny_mar().eval()
    a, b, c = (model.sample(torch.tensor([1, 2]), SamplerConfig(steps=4, guidance=1.0),
                            generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
