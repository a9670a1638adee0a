import pytest
import torch
from einops import rearrange

from minimuse.tokenizer.quantizer import VectorQuantizer, codebook_stats, vq_loss


def set_codebook(vq: VectorQuantizer, codes: list) -> None:
    """Hand-made codebook; for EMA quantizers also the running sums, which must agree with it."""
    codes = torch.tensor(codes, dtype=torch.float)
    with torch.no_grad():
        vq.codebook.copy_(codes)
        if vq.ema:
            vq.embed_sum.copy_(codes)


def latents(points: list) -> torch.Tensor:
    """(L, D) points -> (1, D, 1, L) encoder output."""
    return rearrange(torch.tensor(points, dtype=torch.float), "l d -> 1 d 1 l")


def test_gradient_passes_straight_through():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 32)
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 8, 3, 3)
    vq(z).z_q.backward(upstream)  # the loss is left out: only z_q's path
    torch.testing.assert_close(z.grad, upstream)


def test_nearest_code_is_chosen():
    vq = VectorQuantizer(2, 3)
    set_codebook(vq, [[0, 0], [1, 0], [0, 1]])
    out = vq(latents([[0.1, 0.1], [0.9, 0.2], [-0.1, 2.0], [0.6, 0.3]]))
    assert out.ids.tolist() == [[[0, 1, 2, 1]]]
    assert out.ids.dtype == torch.int64
    torch.testing.assert_close(out.z_q, latents([[0, 0], [1, 0], [0, 1], [1, 0]]))


def test_l2_lookup_uses_cosine_similarity():
    vq = VectorQuantizer(2, 2, l2_norm=True)
    # A raw dot product would pick the long code 1; after normalisation code 0 is closer in angle.
    set_codebook(vq, [[1, 0], [0, 10]])
    assert vq(latents([[1.0, 0.5]])).ids.item() == 0


def test_loss_values_and_beta_on_commitment_term():
    e = torch.tensor([[1.0, 2.0]], requires_grad=True)
    q = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = vq_loss(e, q, beta=0.25)
    # codebook term (1 + 4) / 2 = 2.5, commitment term the same: 2.5 + 0.25 * 2.5
    assert loss.item() == pytest.approx(3.125)
    assert vq_loss(e, q, beta=0.25, codebook_term=False).item() == pytest.approx(0.625)
    loss.backward()
    # The values cannot tell which term beta is on; the gradients can. N = 2 elements.
    torch.testing.assert_close(e.grad, 2 * 0.25 * (e - q).detach() / 2)  # encoder: 2 beta (e - q) / N
    torch.testing.assert_close(q.grad, 2 * (q - e).detach() / 2)  # codebook: 2 (q - e) / N


def test_beta_pinned_through_the_module():
    torch.manual_seed(0)
    beta = 0.25
    vq = VectorQuantizer(4, 16, beta=beta)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    out.loss.backward()
    q = vq.lookup(out.ids).detach()  # (B, D, h, w)
    n = z.numel()
    torch.testing.assert_close(z.grad, 2 * beta * (z - q).detach() / n)
    per_position = rearrange(2 * (q - z.detach()) / n, "b d h w -> (b h w) d")
    expected = torch.zeros(16, 4).index_add_(0, out.ids.flatten(), per_position)
    torch.testing.assert_close(vq.codebook.grad, expected)


def test_ema_moves_codes_towards_their_encodings():
    vq = VectorQuantizer(2, 2, ema=True, ema_decay=0.9, restart_dead=False)
    set_codebook(vq, [[0, 0], [10, 10]])
    assert vq.codebook.requires_grad is False
    assert all(p is not vq.codebook for p in vq.parameters())
    z = latents([[1.0, 1.0]] * 4).requires_grad_()
    out = vq(z)
    out.loss.backward()
    assert vq.codebook.grad is None and z.grad is not None
    # N_0 = 0.9 * 1 + 0.1 * 4, m_0 = 0.9 * 0 + 0.1 * 4 * (1, 1)
    torch.testing.assert_close(vq.codebook[0], torch.full((2,), 0.4 / 1.3), atol=1e-4, rtol=0)
    torch.testing.assert_close(vq.codebook[1], torch.full((2,), 10.0), atol=1e-3, rtol=0)
    for _ in range(100):
        vq(z)
    torch.testing.assert_close(vq.codebook[0], torch.ones(2), atol=1e-3, rtol=0)
    frozen = vq.codebook.clone()
    vq.eval()
    vq(latents([[5.0, 5.0]]))
    torch.testing.assert_close(vq.codebook, frozen)


def test_ema_loss_is_commitment_only():
    vq = VectorQuantizer(2, 2, ema=True, beta=0.25)
    set_codebook(vq, [[0, 0], [10, 10]])
    vq.eval()
    assert vq(latents([[1.0, 2.0]])).loss.item() == pytest.approx(0.25 * 2.5)


@pytest.mark.parametrize("ema", [False, True])
def test_dead_code_is_restarted_from_the_batch(ema):
    def run(seed):
        torch.manual_seed(seed)
        vq = VectorQuantizer(2, 3, ema=ema, ema_decay=0.5, usage_decay=0.5, dead_threshold=0.3)
        set_codebook(vq, [[0, 0], [1, 1], [100, 100]])  # code 2 is never chosen
        centres = torch.tensor([[0.0, 0.0]] * 4 + [[1.0, 1.0]] * 4)  # (8, 2), half near each live code
        batches = [latents((centres + 0.1 * torch.randn(8, 2)).tolist()) for _ in range(3)]
        for z in batches:  # usage of code 2: 0.5, 0.25 < 0.3, so the third forward restarts it
            vq(z)
        return vq, rearrange(batches[-1], "1 d 1 l -> l d")

    vq, last = run(0)
    if ema:  # restarted, then moved by the EMA towards the encodings it won
        assert vq.codebook[2].abs().max() < 2
    else:
        assert torch.isclose(last, vq.codebook[2]).all(dim=1).any()
        torch.testing.assert_close(vq.codebook[:2], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(run(0)[0].codebook, vq.codebook)  # the global seed controls the restart


def test_l2_codes_and_encodings_have_unit_norm():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 16, l2_norm=True)
    z = torch.randn(2, 8, 4, 4)
    out = vq(z)
    torch.testing.assert_close(vq.codes().norm(dim=1), torch.ones(16))
    torch.testing.assert_close(out.z_q.norm(dim=1), torch.ones(2, 4, 4))
    # Normalised encodings: scaling the encoder output changes neither the codes chosen nor the loss.
    scaled = vq(10 * z)
    assert torch.equal(scaled.ids, out.ids)
    torch.testing.assert_close(scaled.loss, out.loss)

    ema = VectorQuantizer(8, 16, code_dim=4, l2_norm=True, ema=True, dead_threshold=0.9, ema_decay=0.5)
    for _ in range(5):  # EMA updates and restarts both keep the codes on the sphere
        ema(torch.randn(2, 8, 4, 4))
    torch.testing.assert_close(ema.codebook.norm(dim=1), torch.ones(16))


def test_perplexity_and_usage_on_hand_made_ids():
    perplexity, usage = codebook_stats(torch.zeros(2, 3, 3, dtype=torch.long), 8)
    assert perplexity.item() == pytest.approx(1.0) and usage.item() == pytest.approx(1 / 8)
    perplexity, usage = codebook_stats(torch.tensor([[[0, 1], [2, 3]]]), 8)
    assert perplexity.item() == pytest.approx(4.0) and usage.item() == pytest.approx(0.5)
    perplexity, usage = codebook_stats(torch.tensor([0, 0, 0, 1]), 4)
    assert perplexity.item() == pytest.approx(4 / 3 ** 0.75) and usage.item() == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs", [{}, {"code_dim": 8}, {"code_dim": 8, "l2_norm": True}, {"ema": True}])
def test_lookup_matches_forward_in_eval_mode(kwargs):
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 32, **kwargs).eval()
    out = vq(torch.randn(2, 16, 4, 4))
    torch.testing.assert_close(vq.lookup(out.ids), out.z_q)


def test_factorised_low_dim_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 64, code_dim=8, l2_norm=True)
    assert vq.codebook.shape == (64, 8)
    z = torch.randn(2, 32, 5, 7, requires_grad=True)
    out = vq(z)
    assert out.z_q.shape == (2, 32, 5, 7) and out.ids.shape == (2, 5, 7)
    assert 0 <= out.ids.min() and out.ids.max() < 64
    (out.z_q.square().mean() + out.loss).backward()
    assert z.grad is not None and vq.in_proj.weight.grad is not None and vq.out_proj.weight.grad is not None
    assert 1.0 <= out.perplexity.item() <= 64 and 0 < out.usage.item() <= 1


def test_distances_are_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 512).eval()
    z = torch.randn(8, 16, 16, 16) / 512  # on the scale of the uniform(-1/K, 1/K) codes
    reference = vq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
    assert torch.equal(out.ids, reference.ids)
    assert out.loss.dtype == torch.float32


def test_clear_errors():
    vq = VectorQuantizer(4, 8)
    with pytest.raises(ValueError, match="expects"):
        vq(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="ids must lie"):
        vq.lookup(torch.full((1, 2, 2), 8))
    with pytest.raises(ValueError, match="ema_decay"):
        VectorQuantizer(4, 8, ema_decay=1.0)


def ema_codebook_after_one_step(rank: int, world: int, rendezvous: str, out: str) -> None:
    """One training forward of an EMA quantizer on this process's share of a fixed batch; saves the codebook.
    Run by torch.multiprocessing.spawn (rank first); world 1 runs the whole batch in one process."""
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 8, ema=True, ema_decay=0.5, restart_dead=False)
    z = torch.randn(4, 4, 2, 2, generator=torch.Generator().manual_seed(1))          # the global batch of 4
    vq(z[rank::world])
    torch.save(vq.codebook, f"{out}/codebook{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


def test_the_ema_codebook_learns_from_every_process_batch_under_ddp(tmp_path):
    """Two processes with half a batch each end with the codebook one process makes from the whole batch."""
    (tmp_path / "single").mkdir()
    (tmp_path / "ddp").mkdir()
    ema_codebook_after_one_step(0, 1, "", str(tmp_path / "single"))
    torch.multiprocessing.spawn(ema_codebook_after_one_step, args=(2, str(tmp_path / "rdzv"), str(tmp_path / "ddp")),
                                nprocs=2)
    single = torch.load(tmp_path / "single" / "codebook0.pt")
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(tmp_path / "ddp" / f"codebook{rank}.pt"), single)
