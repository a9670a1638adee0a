"""End to end: train.py and sample.py as a user runs them, with tiny step counts, in a temp folder."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# A model small enough to train for a few steps in seconds; the pipeline is the same as the real preset's.
SMALL = ["--set", "tokenizer.channels=8", "--set", "tokenizer.codebook_size=32", "--set", "generator.dim=32",
         "--set", "generator.depth=1", "--set", "generator.heads=2", "--set", "data.train_size=64",
         "--set", "data.holdout_size=24", "--set", "train_tokenizer.batch_size=8",
         "--set", "train_generator.batch_size=8", "--set", "train_tokenizer.sample_every=2",
         "--set", "eval_per_class=4"]
# The tiny preset compiles its generator; tests that are not about that skip the compile's warm-up.
EAGER = ["--set", "train_generator.compile=false"]


def run(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    result = run("train.py", "--preset", "tiny", "--steps", "3", "--out", str(out), *SMALL)   # as users run it
    assert "torch.compile" in result.stdout                       # it says whether the generator was compiled
    return out


def test_train_writes_every_artifact(run_dir):
    for name in ["tokenizer.pt", "generator.pt", "tokens.pt", "metrics.json", "samples.png", "tokenizer_log.csv",
                 "tokenizer_curves.png", "generator_log.csv", "tokenizer_samples_000002.png"]:
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tokenizer"]["images"] == 24 and 0 < metrics["tokenizer"]["codebook_usage"] <= 1
    assert set(metrics["generator"]["attribute_accuracy"]["per_class"]) == {
        f"{c} {s}" for s in ("circle", "square", "triangle") for c in ("red", "green", "blue", "yellow")}


def test_sample_grid_folder_and_filmstrip(run_dir, tmp_path):
    run("sample.py", "--ckpt", str(run_dir), "--class", "red circle", "--n", "4", "--steps", "4",
        "--filmstrip", "--out", str(tmp_path / "red") + "/")
    pngs = sorted(p.name for p in (tmp_path / "red").glob("*.png"))
    assert pngs == ["0000_red_circle.png", "0001_red_circle.png", "0002_red_circle.png", "0003_red_circle.png",
                    "grid.png", "grid_filmstrip.png"]
    assert Image.open(tmp_path / "red" / "0000_red_circle.png").size == (32, 32)
    run("sample.py", "--ckpt", str(run_dir / "generator.pt"), "--n", "2", "--out", str(tmp_path / "all.png"))
    assert Image.open(tmp_path / "all.png").size[1] > 12 * 32      # one row per class


def test_same_seed_same_samples(run_dir, tmp_path):
    for name in ("a", "b"):
        run("sample.py", "--ckpt", str(run_dir), "--class", "3", "--n", "4", "--seed", "7", "--out", str(tmp_path / f"{name}.png"))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_reconstruct_a_folder(run_dir, tmp_path):
    from minimuse.data.shapes import Shapes
    from minimuse.viz import save_image
    images = tmp_path / "images"
    images.mkdir()
    shapes = Shapes(32, "holdout", size=3)
    for i in range(3):
        save_image(shapes[i][0], images / f"img{i}.png")
    result = run("sample.py", "--ckpt", str(run_dir), "--reconstruct", str(images), "--out", str(tmp_path / "rec"))
    assert "mean PSNR" in result.stdout
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["grid.png", "img0.png", "img1.png", "img2.png"]


def test_user_errors_are_one_line(run_dir, tmp_path):
    cases = [
        ("sample.py", "--ckpt", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")),
        ("sample.py", "--ckpt", str(run_dir / "tokenizer.pt"), "--out", str(tmp_path / "x.png")),   # wrong kind
        ("sample.py", "--ckpt", str(run_dir), "--class", "99", "--out", str(tmp_path / "x.png")),
        ("sample.py", "--ckpt", str(run_dir), "--class", "purple cube", "--out", str(tmp_path / "x.png")),
        ("train.py", "--steps", "1", "--out", str(tmp_path / "r"), "--set", "tokenizer.codebok_size=3"),
        ("train.py", "--stage", "generator", "--out", str(tmp_path / "empty")),
    ]
    for script, *args in cases:
        result = run(script, *args, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (args, result.stderr)
        assert result.stderr.strip().startswith("error:"), result.stderr
    assert "tokenizer.codebook_size" in run("train.py", *cases[4][1:], check=False).stderr  # lists the valid keys
    # a run that diverges (its weights overflow after one step) ends its progress bar with a one-line error
    result = run("train.py", "--stage", "tokenizer", "--steps", "3", "--out", str(tmp_path / "nan"), *SMALL,
                 "--set", "train_tokenizer.lr=1e30", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert re.match(r"error: tokenizer: loss_g=(nan|inf), gnorm_g=(nan|inf) at step 1; stopped before the update",
                    result.stderr.strip().splitlines()[-1]), result.stderr


def test_generator_stage_reuses_the_tokenizer_and_resume_continues(run_dir):
    before = torch.load(run_dir / "tokenizer.pt", weights_only=True)["step"]
    result = run("train.py", "--preset", "tiny", "--stage", "generator", "--steps", "5", "--resume",
                 "--out", str(run_dir), *SMALL, *EAGER)
    assert "resuming generator from step 3" in result.stdout
    assert torch.load(run_dir / "generator.pt", weights_only=True)["step"] == 5
    assert torch.load(run_dir / "tokenizer.pt", weights_only=True)["step"] == before


def test_generator_stage_is_the_same_whether_the_token_cache_is_hit(run_dir, tmp_path):
    # encoding the tokens draws from the global RNG (a DataLoader does); the generator must not depend on it
    for name, files in (("encode", ["tokenizer.pt"]), ("cached", ["tokenizer.pt", "tokens.pt"])):
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).write_bytes((run_dir / f).read_bytes())
        result = run("train.py", "--preset", "tiny", "--stage", "generator", "--steps", "2",
                     "--out", str(tmp_path / name), *SMALL, *EAGER)
        assert ("encode tokens" in result.stderr) == (name == "encode")
    encoded, cached = (torch.load(tmp_path / n / "generator.pt", weights_only=True)["model"]
                       for n in ("encode", "cached"))
    assert all(torch.equal(encoded[k], cached[k]) for k in encoded)


def test_the_token_cache_is_not_reused_for_other_images(run_dir, tmp_path):
    for f in ("tokenizer.pt", "tokens.pt"):
        (tmp_path / f).write_bytes((run_dir / f).read_bytes())
    result = run("train.py", "--preset", "tiny", "--stage", "generator", "--steps", "1", "--seed", "1",
                 "--out", str(tmp_path), *SMALL, *EAGER)                     # another seed draws other Shapes
    assert "encode tokens" in result.stderr


def test_mar_trains_and_samples_end_to_end(tmp_path):
    out = tmp_path / "mar"
    run("train.py", "--preset", "tiny-mar", "--steps", "2", "--out", str(out), *SMALL,
        "--set", "generator.head.width=16", "--set", "generator.head.sample_steps=5", "--set", "sampler.steps=4")
    metrics = json.loads((out / "metrics.json").read_text())
    assert "codebook_usage" not in metrics["tokenizer"] and metrics["generator"]["samples_per_class"] == 4
    state = torch.load(out / "tokenizer.pt", weights_only=True)
    assert state["model"]["bottleneck.scale"] != 1.0                # measured on the data at the end
    result = run("sample.py", "--ckpt", str(out), "--class", "green square", "--n", "3", "--filmstrip",
                 "--out", str(tmp_path / "g.png"))
    assert "wrote 3 samples" in result.stdout
    assert Image.open(tmp_path / "g.png").size[0] > 32 and (tmp_path / "g_filmstrip.png").exists()


def test_a_folder_of_a_dozen_images_trains_end_to_end(tmp_path):
    from minimuse.data.shapes import Shapes
    from minimuse.viz import save_image
    shapes = Shapes(32, "train", size=12)
    (tmp_path / "images").mkdir()
    for i in range(12):
        save_image(shapes[i][0], tmp_path / "images" / f"{i:02d}.png")
    sizes = ["--set", "tokenizer.channels=8", "--set", "generator.dim=32", "--set", "generator.depth=1",
             "--set", "generator.heads=2", "--set", "eval_per_class=2"]                      # the defaults' batches
    result = run("train.py", "--data", str(tmp_path / "images"), "--steps", "2", "--out", str(tmp_path / "run"),
                 *sizes, *EAGER)
    assert "fewer than data.holdout_size=1000" in result.stdout and "using batches of 11" in result.stdout
    assert (tmp_path / "run" / "generator.pt").exists() and (tmp_path / "run" / "samples.png").exists()


def test_sample_takes_sampler_settings_by_flag_and_by_set(run_dir, tmp_path):
    result = run("sample.py", "--ckpt", str(run_dir), "--class", "2", "--n", "2", "--cfg", "3", "--top-k", "0",
                 "--set", "sampler.guidance_schedule=constant", "--set", "sampler.steps=3", "--out", str(tmp_path / "a.png"))
    assert "wrote 2 samples (3 steps, guidance 3)" in result.stdout              # --cfg: the old name of --guidance
    for bad, says in ((["--set", "generator.dim=8"], "sampler.* keys only"), (["--set", "sampler.topk=1"], "unknown")):
        result = run("sample.py", "--ckpt", str(run_dir), *bad, "--out", str(tmp_path / "b.png"), check=False)
        assert result.returncode != 0 and says in result.stderr and "Traceback" not in result.stderr
