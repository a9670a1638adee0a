import itertools

import pytest
import torch

from minimuse import runtime
from minimuse.config import RunConfig, TrainConfig
from minimuse.train import trainer
from tests._ddp_worker import ToyStage

ONES = torch.utils.data.TensorDataset(torch.ones(8, 4))                 # one batch of 8, the toy stage's data


@pytest.mark.parametrize("has_bf16, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_cpu_follows_the_cpus_bf16_instructions(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(runtime, "cpu_has_bf16_matmul", lambda: has_bf16)
    cpu = torch.device("cpu")
    assert runtime.autocast_dtype(cpu, "auto") is expected
    assert runtime.autocast_dtype(cpu, "fp32") is None                   # an explicit choice is never overridden
    assert runtime.autocast_dtype(cpu, "bf16") is torch.bfloat16


def test_the_bf16_check_reads_torchs_cpu_features_and_is_false_without_them(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert runtime.cpu_has_bf16_matmul() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert runtime.cpu_has_bf16_matmul() is True
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")             # an older torch: no such check
    assert runtime.cpu_has_bf16_matmul() is False


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="choose auto, fp32 or bf16"):
        runtime.autocast_dtype(torch.device("cpu"), "fp16")


def test_compile_needs_a_cpp_compiler_on_cpu_and_is_left_out_off_cuda(monkeypatch):
    from torch._inductor import cpp_builder
    cpu = torch.device("cpu")
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", lambda: "g++")
    assert runtime.can_compile(cpu)

    def no_compiler():
        raise cpp_builder.exc.InvalidCxxCompiler

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    assert not runtime.can_compile(cpu)
    assert runtime.can_compile(torch.device("cuda")) and not runtime.can_compile(torch.device("mps"))


def test_without_a_cpp_compiler_fit_trains_uncompiled_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(runtime, "can_compile", lambda device: False)
    stage, wrapped = ToyStage(), []
    stage.wrap = lambda ddp, compile: wrapped.append(compile)
    tcfg = TrainConfig(steps=2, batch_size=8, warmup=1, precision="fp32", compile=True)
    trainer.fit(stage, ONES, tcfg, tmp_path, RunConfig())
    assert wrapped == [False]
    assert "generator: training without torch.compile (no C++ compiler was found)" in capsys.readouterr().out
    assert (tmp_path / "generator.pt").exists()


def test_adamw_is_fused_decays_matrices_only_and_updates_as_the_reference_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]
    tcfg = TrainConfig(lr=0.1, weight_decay=0.1)
    opt = trainer.make_optimizer(model.parameters(), tcfg)
    decayed, plain = opt.param_groups
    assert opt.defaults["fused"] and [p.dim() for p in decayed["params"]] == [2]
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0 and len(plain["params"]) == 3
    loop = torch.optim.AdamW([{"params": reference[:1], "weight_decay": 0.1},
                              {"params": reference[1:], "weight_decay": 0.0}], lr=0.1, betas=tcfg.betas, foreach=False)
    x = torch.randn(5, 3)
    for _ in range(3):
        for params, optimizer in ((list(model.parameters()), opt), (reference, loop)):
            weight, bias, gain, shift = params
            torch.nn.functional.layer_norm(x @ weight.T + bias, (3,), gain, shift).pow(3).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    for fused, ref in zip(model.parameters(), reference):
        torch.testing.assert_close(fused, ref)


def test_training_on_cuda_takes_cudnn_attention_out_of_sdpas_choices(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(torch.backends.cuda, "enable_cudnn_sdp", calls.append)
    runtime.avoid_cudnn_attention(torch.device("cpu"))
    assert calls == []                                                   # nothing to change off CUDA
    runtime.avoid_cudnn_attention(torch.device("cuda"))
    assert calls == [False]
    seen = []                                                            # and `fit` asks for it with its device
    monkeypatch.setattr(runtime, "avoid_cudnn_attention", seen.append)
    trainer.fit(ToyStage(), ONES, TrainConfig(steps=1, batch_size=8, warmup=1, precision="fp32"), tmp_path, RunConfig())
    assert seen == [torch.device("cpu")]


def test_a_non_finite_loss_stops_training_before_the_update_and_keeps_the_last_checkpoint(tmp_path):
    stage = ToyStage()
    losses = stage.losses
    nan = torch.full((8, 4), float("nan"))                               # step 3 sees a NaN batch
    stage.losses = lambda batch, step: (losses([nan] if step == 3 else batch, step)[0], {"psnr": float("inf")})
    tcfg = TrainConfig(steps=10, batch_size=8, warmup=1, precision="fp32", ckpt_every=2)   # a metric may be inf
    with pytest.raises(FloatingPointError, match=r"loss_g=nan, gnorm_g=nan at step 3; stopped before the update "
                                                 r"\(.*generator.pt holds the last checkpoint\)"):
        trainer.fit(stage, ONES, tcfg, tmp_path, RunConfig())
    assert all(p.isfinite().all() for p in stage.model.parameters())    # the NaN step changed nothing
    saved = torch.load(tmp_path / "generator.pt", weights_only=True)
    assert saved["step"] == 2 and all(v.isfinite().all() for v in saved["model"].values())


# ---------------------------------------------------------------------------------------------------------
# The data order, and resume
# ---------------------------------------------------------------------------------------------------------


def test_shuffled_batches_keep_the_order_a_shuffling_dataloader_gives():
    """Runs seeded before the resumable order existed read their data in the same order today."""
    data = torch.utils.data.TensorDataset(torch.arange(10))
    loader = torch.utils.data.DataLoader(data, batch_size=3, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(4))
    expected = [b[0].tolist() for _ in range(3) for b in loader]               # three epochs
    batches = trainer.shuffled_batches(10, 3, seed=4)
    assert [next(batches) for _ in range(9)] == expected


def test_shuffled_batches_skip_lands_where_an_uninterrupted_run_would_be():
    straight = trainer.shuffled_batches(10, 3, seed=1)
    expected = [next(straight) for _ in range(8)]
    assert list(itertools.islice(trainer.shuffled_batches(10, 3, seed=1, skip=5), 3)) == expected[5:8]
    shards = [trainer.shuffled_batches(10, 4, seed=1, rank=r, world=2) for r in range(2)]
    first = [next(s) for s in shards]                                           # batch 4 = 2 per process
    assert sorted(first[0] + first[1]) == sorted(next(trainer.shuffled_batches(10, 4, seed=1)))
    with pytest.raises(ValueError, match="larger than the 10 training items"):
        next(trainer.shuffled_batches(10, 12, seed=1))


def small_generator_stage():
    from minimuse.config import apply_overrides
    from minimuse.presets import get_preset
    from minimuse.tokenizer.autoencoder import Autoencoder
    from minimuse.train.stages import GeneratorStage
    cfg = apply_overrides(get_preset("tiny"), ["generator.dim=16", "generator.depth=1", "generator.heads=2",
                                              "tokenizer.channels=4", "tokenizer.codebook_size=16",
                                              "generator.cond_drop=0.5"])
    torch.manual_seed(0)
    stage = GeneratorStage(cfg, torch.device("cpu"), Autoencoder(cfg.tokenizer), [f"c{k}" for k in range(4)])
    stage.sample_grid = lambda path: None
    tokens = torch.utils.data.TensorDataset(torch.randint(0, 16, (40, 8, 8), generator=torch.Generator().manual_seed(1)),
                                            torch.arange(40) % 4)
    return stage, tokens, cfg


def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(tmp_path):
    """N steps straight against N/2, an interruption, and a resume to N (CPU, compile off): the data order, the
    masks and label drops (global RNG), the optimizer and the learning rate all continue as they were."""
    tcfg = TrainConfig(steps=8, batch_size=16, warmup=2, lr=1e-2, precision="fp32", ckpt_every=4)
    stage, tokens, cfg = small_generator_stage()
    trainer.fit(stage, tokens, tcfg, tmp_path / "straight", cfg)
    straight = torch.load(tmp_path / "straight" / "generator.pt", weights_only=True)["model"]

    stage, tokens, cfg = small_generator_stage()
    losses = stage.losses

    def interrupted(batch, step):
        if step == 5:                                   # after the checkpoint at step 4, before step 5 ends
            raise KeyboardInterrupt
        return losses(batch, step)

    stage.losses = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(stage, tokens, tcfg, tmp_path / "resumed", cfg)
    assert torch.load(tmp_path / "resumed" / "generator.pt", weights_only=True)["step"] == 4
    stage, tokens, cfg = small_generator_stage()
    trainer.fit(stage, tokens, tcfg, tmp_path / "resumed", cfg, resume=True)
    resumed = torch.load(tmp_path / "resumed" / "generator.pt", weights_only=True)["model"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    with open(tmp_path / "resumed" / "generator_log.csv") as f:
        assert [int(line.split(",")[0]) for line in f.readlines()[1:]] == [0, 7]      # the log goes on too


def test_a_continuous_tokenizer_with_weight_ema_saves_unit_variance_tokens(tmp_path):
    """The latent scale is measured on the weights that are saved: with an EMA of the weights, on the EMA ones
    (loading the EMA after measuring once reset the scale and left tokens far from unit variance)."""
    from minimuse.config import apply_overrides
    from minimuse.data.shapes import Shapes
    from minimuse.inference import load_tokenizer
    from minimuse.presets import get_preset
    from minimuse.train.stages import TokenizerStage
    cfg = apply_overrides(get_preset("tiny-mar"), ["tokenizer.channels=8", "tokenizer.latent_dim=8"])
    tcfg = TrainConfig(steps=30, batch_size=8, warmup=1, lr=3e-3, precision="fp32", ema_decay=0.5)
    images = Shapes(32, "train", size=64)
    torch.manual_seed(0)
    stage = TokenizerStage(cfg, torch.device("cpu"), preview=torch.stack([images[i][0] for i in range(2)]))
    trainer.fit(stage, images, tcfg, tmp_path, cfg)
    tokenizer, _ = load_tokenizer(tmp_path, torch.device("cpu"))
    tokens = tokenizer.encode(torch.stack([images[i][0] for i in range(64)]))      # (64, h, w, C)
    assert 0.8 < tokens.std().item() < 1.25
