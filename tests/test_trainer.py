import pytest
import torch

from minimuse import trainer


@pytest.mark.parametrize("speedup, expected", [(4.0, torch.bfloat16), (1.2, None), (0.3, None)])
def test_auto_precision_on_cpu_follows_the_bf16_probe(monkeypatch, speedup, expected):
    monkeypatch.setattr(trainer, "cpu_bf16_speedup", lambda: speedup)
    cpu = torch.device("cpu")
    assert trainer.autocast_dtype(cpu, "auto") is expected
    assert trainer.autocast_dtype(cpu, "fp32") is None                   # an explicit choice is never probed
    assert trainer.autocast_dtype(cpu, "bf16") is torch.bfloat16


def test_bf16_probe_measures_a_ratio_once():
    trainer.cpu_bf16_speedup.cache_clear()
    rng = torch.get_rng_state()
    first = trainer.cpu_bf16_speedup()
    assert first > 0 and trainer.cpu_bf16_speedup() == first             # cached: one probe per process
    assert torch.equal(torch.get_rng_state(), rng)                       # whether it ran cannot change training


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="choose auto, fp32 or bf16"):
        trainer.autocast_dtype(torch.device("cpu"), "fp16")
