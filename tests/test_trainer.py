import pytest
import torch

from minimuse import trainer


@pytest.mark.parametrize("has_bf16, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_cpu_follows_the_cpus_bf16_instructions(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(trainer, "cpu_has_bf16_matmul", lambda: has_bf16)
    cpu = torch.device("cpu")
    assert trainer.autocast_dtype(cpu, "auto") is expected
    assert trainer.autocast_dtype(cpu, "fp32") is None                   # an explicit choice is never overridden
    assert trainer.autocast_dtype(cpu, "bf16") is torch.bfloat16


def test_the_bf16_check_reads_torchs_cpu_features_and_is_false_without_them(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert trainer.cpu_has_bf16_matmul() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert trainer.cpu_has_bf16_matmul() is True
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")             # an older torch: no such check
    assert trainer.cpu_has_bf16_matmul() is False


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="choose auto, fp32 or bf16"):
        trainer.autocast_dtype(torch.device("cpu"), "fp16")
