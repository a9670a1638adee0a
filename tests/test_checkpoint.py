import os
from pathlib import Path

import pytest
import torch

import minimuse.checkpoint
from minimuse.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minimuse.config import from_dict, to_dict
from minimuse.inference import generate, load_generator
from minimuse.presets import get_preset

FIXTURES = Path(__file__).parent / "fixtures" / "v0"


def make_state(step: int = 7, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"config": to_dict(get_preset("tiny")), "step": step,
            "model": {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.zeros(4),
                      "codes": torch.randint(0, 10, (5,), generator=g)},
            "ema": None, "optimizer": {"lr": 1e-3, "betas": (0.9, 0.99)}, "extra": {"note": "hello"}}


def one_line_error(path, kind: str) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, kind)
    message = str(err.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    state = make_state()
    save_checkpoint(tmp_path / "tokenizer.pt", "tokenizer", state)
    loaded = load_checkpoint(tmp_path / "tokenizer.pt", "tokenizer")
    assert loaded["kind"] == "tokenizer"
    assert loaded["step"] == 7
    assert loaded["config"] == state["config"]
    assert from_dict(loaded["config"]) == get_preset("tiny")
    assert loaded["model"].keys() == state["model"].keys()
    for name, tensor in state["model"].items():
        assert loaded["model"][name].dtype == tensor.dtype
        torch.testing.assert_close(loaded["model"][name], tensor, rtol=0, atol=0)
    assert loaded["ema"] is None
    assert loaded["optimizer"] == state["optimizer"]
    assert loaded["extra"] == {"note": "hello"}


def test_save_overwrites_and_creates_the_folder(tmp_path):
    path = tmp_path / "run" / "nested" / "generator.pt"
    save_checkpoint(path, "generator", make_state(step=1))
    save_checkpoint(path, "generator", make_state(step=2, seed=1))
    loaded = load_checkpoint(path, "generator")
    assert loaded["step"] == 2
    torch.testing.assert_close(loaded["model"]["conv.weight"], make_state(seed=1)["model"]["conv.weight"])
    assert os.listdir(path.parent) == ["generator.pt"]  # no temporary files left behind


def test_run_folder_resolves_to_the_kind(tmp_path):
    save_checkpoint(tmp_path / "tokenizer.pt", "tokenizer", make_state(step=10))
    save_checkpoint(tmp_path / "generator.pt", "generator", make_state(step=20))
    assert load_checkpoint(tmp_path, "tokenizer")["step"] == 10
    assert load_checkpoint(str(tmp_path), "generator")["step"] == 20


# ---------------------------------------------------------------------------------------------------------
# Atomic save: a crash while writing keeps the previous checkpoint
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crash", [OSError("No space left on device"), KeyboardInterrupt()])
def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, crash):
    path = tmp_path / "tokenizer.pt"
    save_checkpoint(path, "tokenizer", make_state(step=1))
    old = load_checkpoint(path, "tokenizer")

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # some bytes reach the disk, then the process dies
        raise crash

    monkeypatch.setattr(minimuse.checkpoint.torch, "save", crashing_save)
    with pytest.raises(type(crash)):
        save_checkpoint(path, "tokenizer", make_state(step=2, seed=1))
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["tokenizer.pt"]  # the temporary file was removed
    loaded = load_checkpoint(path, "tokenizer")
    assert loaded["step"] == 1
    torch.testing.assert_close(loaded["model"]["conv.weight"], old["model"]["conv.weight"], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------
# User mistakes: one-line CheckpointError that says what was expected
# ---------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    message = one_line_error(tmp_path / "nope.pt", "tokenizer")
    assert "not found" in message and "nope.pt" in message and "tokenizer.pt" in message


def test_run_folder_without_the_kind(tmp_path):
    save_checkpoint(tmp_path / "tokenizer.pt", "tokenizer", make_state())
    message = one_line_error(tmp_path, "generator")
    assert "not found" in message and "no generator.pt in that folder" in message


def test_checkpoint_error_is_a_runtime_error():
    assert issubclass(CheckpointError, RuntimeError)


@pytest.mark.parametrize("content", ["random", "truncated", "empty"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "tokenizer.pt"
    if content == "random":
        path.write_bytes(os.urandom(1000))
    elif content == "truncated":
        save_checkpoint(path, "tokenizer", make_state())
        path.write_bytes(path.read_bytes()[:500])
    else:
        path.write_bytes(b"")
    message = one_line_error(path, "tokenizer")
    assert message.startswith(f"cannot read checkpoint {path}")


class NotATensor:
    """Something weights_only loading must refuse to unpickle."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "tokenizer.pt"
    torch.save({"kind": "tokenizer", "payload": NotATensor()}, path)
    assert "cannot read checkpoint" in one_line_error(path, "tokenizer")


@pytest.mark.parametrize("content", [{"weight": torch.ones(2)}, torch.ones(3), [1, 2, 3]])
def test_torch_file_that_is_not_a_minimuse_checkpoint(tmp_path, content):
    path = tmp_path / "model.pt"
    torch.save(content, path)
    message = one_line_error(path, "tokenizer")
    assert "not a minimuse checkpoint" in message and "expected a tokenizer checkpoint" in message


def test_wrong_kind(tmp_path):
    save_checkpoint(tmp_path / "tok.pt", "tokenizer", make_state())
    message = one_line_error(tmp_path / "tok.pt", "generator")
    assert "is a tokenizer checkpoint" in message and "a generator checkpoint was expected" in message


# ---------------------------------------------------------------------------------------------------------
# Checkpoints written by an earlier version (tests/fixtures/README.md) load and sample as they did
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["maskgit", "mar"])
def test_a_checkpoint_from_before_the_restructuring_samples_the_same_images(kind):
    model, tokenizer, cfg, class_names = load_generator(FIXTURES / f"{kind}.pt", torch.device("cpu"))
    assert cfg.generator.kind == kind and len(class_names) == 12
    expected = torch.load(FIXTURES / f"{kind}_samples.pt", weights_only=True)
    assert expected["sampler"]["cfg"] == cfg.sampler.guidance                 # the renamed field kept its value
    images = generate(model, tokenizer, expected["labels"], cfg.sampler, seed=0)
    assert torch.equal(((images + 1) * 127.5).round().to(torch.uint8), expected["images"])
