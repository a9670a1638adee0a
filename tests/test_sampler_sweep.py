"""research/sampler_sweep.py: a setting string becomes a checked, typed copy of the run's sampler."""
import pytest
import torch

from minimuse.config import SamplerConfig
from minimuse.data import build_dataset
from minimuse.data.shapes import COLOURS, SHAPES
from research.sampler_sweep import misread_rows, side_per_shape, with_setting


def test_a_setting_changes_a_copy_of_the_runs_sampler():
    run = SamplerConfig(steps=8, guidance=2.0)
    s = with_setting(run, "top_k=10,guidance=3,guidance_schedule=constant")
    assert (s.top_k, s.guidance, s.guidance_schedule, s.steps) == (10, 3.0, "constant", 8)
    assert type(s.top_k) is int and type(s.guidance) is float
    assert run == SamplerConfig(steps=8, guidance=2.0) and with_setting(run, "") == run


def test_an_unknown_or_mistyped_setting_is_an_error():
    with pytest.raises(ValueError, match="unknown config key"):
        with_setting(SamplerConfig(), "topk=10")
    with pytest.raises(ValueError, match="bad value"):
        with_setting(SamplerConfig(), "top_k=1.5")


def test_side_per_shape_groups_by_the_intended_shape():
    images = torch.ones(3, 3, 32, 32)                                    # white canvases
    for i, side in enumerate((8, 12, 16)):
        images[i, :, 0:side, 0:side] = -1                                 # a black square of that side in each
    labels = torch.tensor([SHAPES.index(s) * len(COLOURS) for s in SHAPES])
    assert side_per_shape(images, labels) == {"circle": 8.0, "square": 12.0, "triangle": 16.0}


def test_misread_rows_hold_only_what_the_checker_rejects_one_row_per_class():
    data = build_dataset("shapes", 32, "holdout", seed=0, size=24)
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor([data[i][1] for i in range(len(data))])
    blank = torch.zeros(1, 3, 32, 32)                                     # no shape at all: always misread
    rows = misread_rows(torch.cat([images, blank]), torch.cat([labels, torch.tensor([5])]), 12, per_row=3)
    assert rows.shape == (36, 3, 32, 32)
    white = rows.flatten(1).eq(1).all(1).view(12, 3)                     # (class, slot): an empty slot
    assert torch.equal(rows[15], blank[0]) and white[5, 1:].all()        # class 5's row: the blank, then nothing
    assert white.sum() == 35                                              # the real images are all read right
