"""The shared transformer layers (minimuse.layers): attention paths, the LocalConv prior, adaLN-Zero blocks."""
import pytest
import torch
import torch.nn.functional as F

from minimuse.config import GeneratorConfig
from minimuse.generators.maskgit import MaskedTransformer
from minimuse.layers import Block, LocalConv, attention, init_weights, make_blocks


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])    # SDPA, and the plain path bf16 takes on CPU
def test_attention_paths_agree(causal, dtype):
    q, k, v = torch.randn(3, 2, 4, 65, 8).unbind(0)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = attention(q.to(dtype), k.to(dtype), v.to(dtype), causal)
    assert out.dtype == dtype and torch.allclose(out.float(), ref, atol=3e-2 if dtype == torch.bfloat16 else 1e-5)


def test_an_adaln_zero_block_starts_as_the_identity_and_reads_its_condition_once_trained():
    torch.manual_seed(0)
    block = Block(dim=16, heads=2, cond_dim=8)
    block.apply(init_weights)
    x, c = torch.randn(3, 5, 16), torch.randn(3, 8)
    assert torch.equal(block(x, c=c), x)                                   # gates at zero
    torch.nn.init.normal_(block.ada[1].weight, std=0.1)
    assert not torch.allclose(block(x, c=c), block(x, c=c.flip(0)))       # now the condition matters


def test_make_blocks_follows_the_config():
    cfg = GeneratorConfig(dim=16, heads=2, local_conv=True, class_cond="token")
    blocks = make_blocks(cfg, depth=3, grid_len=16)
    assert len(blocks) == 3 and all(b.ada is None and b.local.side == 4 for b in blocks)
    assert all(b.local is None for b in make_blocks(cfg, depth=1))        # no grid: no convolution
    with pytest.raises(ValueError, match="class_cond"):
        make_blocks(GeneratorConfig(class_cond="film"), depth=1)


def test_local_conv_starts_as_identity_and_sees_only_3x3_neighbours():
    torch.manual_seed(0)
    local = LocalConv(dim=8, side=4)
    x = torch.randn(2, 1 + 16, 8)                                          # a class token, then a 4x4 grid
    assert torch.equal(local(x), x)                                        # zero-initialised: a fresh block is plain
    torch.nn.init.normal_(local.conv.weight)
    changed = x.clone()
    changed[:, 1 + 5] += 1.0                                               # grid cell (1, 1)
    moved = (local(changed) - local(x)).abs().amax(dim=(0, 2)) > 0         # (17,) which tokens changed
    near = {1 + 4 * y + c for y in range(3) for c in range(3)}             # cells (0..2, 0..2)
    assert moved[0].item() is False                                        # the class token passes unchanged
    assert {i for i in range(17) if moved[i]} == near
    with pytest.raises(AssertionError, match="next row"):
        MaskedTransformer(GeneratorConfig(dim=8, heads=2, local_conv=True), 5, 16, 12, causal=True)
