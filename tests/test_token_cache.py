"""The token cache (minimuse.train.token_cache): reused while it matches, rewritten atomically when it does not."""
import os

import pytest
import torch

from minimuse.config import TokenizerConfig
from minimuse.tokenizer.autoencoder import Autoencoder
from minimuse.train.token_cache import cache_tokens


def images(n: int, seed: int) -> torch.utils.data.TensorDataset:
    x = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.utils.data.TensorDataset(x, torch.arange(n) % 3)


@pytest.fixture
def tokenizer():
    torch.manual_seed(0)
    return Autoencoder(TokenizerConfig(channels=4, latent_dim=8, codebook_size=16)).eval()


def test_the_cache_is_reused_for_the_same_images_and_tokenizer_only(tokenizer, tmp_path, monkeypatch):
    path = tmp_path / "tokens.pt"
    first = cache_tokens(tokenizer, images(6, 0), path, torch.device("cpu"))
    assert first.tensors[0].shape == (6, 4, 4) and first.tensors[0].dtype == torch.long
    monkeypatch.setattr(tokenizer, "encode", lambda x: pytest.fail("a matching cache must not encode again"))
    again = cache_tokens(tokenizer, images(6, 0), path, torch.device("cpu"))
    assert torch.equal(again.tensors[0], first.tensors[0])
    monkeypatch.undo()
    other = cache_tokens(tokenizer, images(6, 1), path, torch.device("cpu"))       # other images: encoded anew
    assert not torch.equal(other.tensors[0], first.tensors[0])


def test_a_crash_while_writing_the_cache_keeps_the_previous_one(tokenizer, tmp_path, monkeypatch):
    path = tmp_path / "tokens.pt"
    cache_tokens(tokenizer, images(6, 0), path, torch.device("cpu"))
    before = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"half a cache")                        # some bytes reach the disk, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        cache_tokens(tokenizer, images(6, 1), path, torch.device("cpu"))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["tokens.pt"] and path.read_bytes() == before
