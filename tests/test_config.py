import dataclasses
import json

import pytest

from minimuse.config import RunConfig, apply_overrides, from_dict, to_dict, valid_keys
from minimuse.presets import PRESETS, get_preset
from minimuse.tokenizer.autoencoder import downsampling_factor


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds(name):
    cfg = get_preset(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.preset == name
    f = downsampling_factor(cfg.tokenizer)  # a valid channel_mult
    assert cfg.data.resolution % f == 0 and cfg.data.resolution // f >= 2
    assert cfg.generator.dim % cfg.generator.heads == 0


def test_presets_are_fresh_objects():
    # apply_overrides mutates in place: one run's overrides must not leak into the next preset call.
    before = get_preset("tiny")
    cfg = apply_overrides(get_preset("tiny"), ["tokenizer.codebook_size=7", "train_tokenizer.steps=3"])
    assert cfg.tokenizer.codebook_size == 7
    fresh = get_preset("tiny")
    assert fresh == before and fresh.tokenizer.codebook_size != 7 and fresh.train_tokenizer.steps != 3
    assert fresh.train_tokenizer is not fresh.train_generator


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*tiny.*imagenet512"):
        get_preset("huge")


def test_overrides_parse_every_field_type():
    cfg = apply_overrides(get_preset("tiny"), [
        "seed=3",                                  # top-level int
        "tokenizer.codebook_size=1024",            # int
        "train_tokenizer.lr=3e-4",                 # float
        "tokenizer.beta=1",                        # float written as an int
        "tokenizer.attention=true",                # bool
        "tokenizer.l2_norm=0",
        "tokenizer.ema=Yes",
        "data.name = cifar10",                     # str, spaces around '=' are fine
        "tokenizer.channel_mult=1,2,4",            # tuple[int, ...]
        "train_generator.betas=(0.8, 0.95)",       # tuple[float, float], Python syntax
        "tokenizer.code_dim=none",                 # int | None -> None
        "data.train_size=500",                     # int | None -> int
        "data.root=/tmp/data",                     # str | None -> str
        "tokenizer.lpips_weights=None",            # str | None -> None
    ])
    assert cfg.seed == 3 and type(cfg.seed) is int
    assert cfg.tokenizer.codebook_size == 1024 and type(cfg.tokenizer.codebook_size) is int
    assert cfg.train_tokenizer.lr == 3e-4
    assert cfg.tokenizer.beta == 1.0 and type(cfg.tokenizer.beta) is float
    assert cfg.tokenizer.attention is True and cfg.tokenizer.l2_norm is False and cfg.tokenizer.ema is True
    assert cfg.data.name == "cifar10"
    assert cfg.tokenizer.channel_mult == (1, 2, 4)
    assert cfg.train_generator.betas == (0.8, 0.95) and type(cfg.train_generator.betas[0]) is float
    assert cfg.tokenizer.code_dim is None
    assert cfg.data.train_size == 500 and type(cfg.data.train_size) is int
    assert cfg.data.root == "/tmp/data"
    assert cfg.tokenizer.lpips_weights is None
    # everything not named keeps its preset value
    assert cfg.train_generator.lr == get_preset("tiny").train_generator.lr


def test_single_element_tuple():
    cfg = apply_overrides(get_preset("tiny"), ["tokenizer.channel_mult=4"])
    assert cfg.tokenizer.channel_mult == (4,)


@pytest.mark.parametrize("key", ["tokenizer.codebok_size", "tokenzier.codebook_size", "foo", "tokenizer",
                                 "tokenizer.channels.x"])
def test_unknown_key_lists_the_valid_ones(key):
    with pytest.raises(ValueError) as err:
        apply_overrides(get_preset("tiny"), [f"{key}=3"])
    message = str(err.value)
    if key == "tokenizer":  # a section, not a value
        assert "bad value for tokenizer" in message
        return
    assert f"unknown config key {key!r}" in message
    assert "tokenizer.codebook_size" in message and "train_generator.betas" in message and "seed" in message


def count_fields(cfg) -> int:
    """Leaf fields of a config tree, counted by walking the dataclasses (not by valid_keys itself)."""
    return sum(count_fields(getattr(cfg, f.name)) if dataclasses.is_dataclass(getattr(cfg, f.name)) else 1
               for f in dataclasses.fields(cfg))


def test_valid_keys_cover_every_field_nested_ones_too():
    keys = valid_keys(get_preset("tiny"))
    assert len(keys) == len(set(keys)) == count_fields(RunConfig())
    assert "generator.head.width" in keys                          # a config nested two levels down
    for key in keys:  # every listed key is accepted back (with its own current value)
        value = get_preset("tiny")
        for part in key.split("."):
            value = getattr(value, part)
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert apply_overrides(get_preset("tiny"), [f"{key}={text}"]) == get_preset("tiny")


@pytest.mark.parametrize("override, fragment", [
    ("tokenizer.codebook_size=abc", "bad value for tokenizer.codebook_size"),
    ("tokenizer.codebook_size=1.5", "bad value for tokenizer.codebook_size"),
    ("train_tokenizer.lr=fast", "bad value for train_tokenizer.lr"),
    ("tokenizer.attention=maybe", "expected true/false, got 'maybe'"),
    ("tokenizer.channel_mult=a,b", "bad value for tokenizer.channel_mult"),
    ("tokenizer.codebook_size", "--set expects key=value"),
])
def test_bad_values_raise(override, fragment):
    with pytest.raises(ValueError) as err:
        apply_overrides(get_preset("tiny"), [override])
    assert fragment in str(err.value)


@pytest.mark.parametrize("name", list(PRESETS))
def test_dict_round_trip(name):
    cfg = get_preset(name)
    assert from_dict(to_dict(cfg)) == cfg
    # JSON (or any format without tuples) turns tuples into lists; from_dict turns them back.
    restored = from_dict(json.loads(json.dumps(to_dict(cfg))))
    assert restored == cfg
    assert type(restored.tokenizer.channel_mult) is tuple and type(restored.train_generator.betas) is tuple


def test_dict_round_trip_keeps_overrides():
    cfg = apply_overrides(get_preset("tiny"), ["tokenizer.channel_mult=1,2", "tokenizer.code_dim=none",
                                              "generator.kind=mar"])
    restored = from_dict(to_dict(cfg))
    assert restored == cfg and restored != get_preset("tiny")


@pytest.mark.parametrize("item", ["tokenizer.channel_mult=1.5,2", "train_tokenizer.betas=0.9",
                                  "train_tokenizer.betas=0.9,0.9,0.9", "tokenizer.codebook_size=1.5"])
def test_a_value_that_does_not_fit_the_field_is_an_error(item):
    with pytest.raises(ValueError, match="bad value"):
        apply_overrides(get_preset("tiny"), [item])


def test_a_checkpoint_config_from_an_older_version_takes_what_it_used_or_todays_defaults():
    d = to_dict(get_preset("tiny"))
    del d["eval_per_class"]
    del d["tokenizer"]["kl_weight"]
    del d["generator"]["class_cond"]                   # checkpoints from before adaLN used the prefix token
    cfg = from_dict(d)
    assert cfg.eval_per_class == RunConfig().eval_per_class and cfg.tokenizer.kl_weight == 1e-6
    assert cfg.generator.class_cond == "token" and RunConfig().generator.class_cond == "adaln"
    assert cfg.tokenizer.channel_mult == get_preset("tiny").tokenizer.channel_mult


def test_renamed_fields_load_from_old_dicts_and_old_set_keys():
    old = to_dict(get_preset("tiny-mar"))
    sampler, generator = old["sampler"], old["generator"]
    sampler["cfg"], sampler["cfg_schedule"] = sampler.pop("guidance"), sampler.pop("guidance_schedule")
    for new_name, old_name in (("width", "diff_width"), ("depth", "diff_depth"), ("batch_mul", "diff_batch_mul"),
                               ("sample_steps", "diff_sample_steps")):
        generator[old_name] = generator["head"].pop(new_name)
    del generator["head"]
    assert from_dict(old) == get_preset("tiny-mar")
    cfg = apply_overrides(get_preset("tiny"), ["sampler.cfg=3", "sampler.cfg_schedule=constant",
                                              "generator.diff_width=64"])
    assert (cfg.sampler.guidance, cfg.sampler.guidance_schedule, cfg.generator.head.width) == (3.0, "constant", 64)


def test_a_field_this_version_does_not_know_is_an_error():
    d = to_dict(get_preset("tiny"))
    d["generator"]["wings"] = 2
    with pytest.raises(ValueError, match="generator.wings"):
        from_dict(d)
