"""Multi-process training through torchrun, on 2 CPU processes (gloo): what a multi-GPU run relies on."""
import json
import os
import subprocess
import sys

from tests.test_cli import EAGER, ROOT, SMALL


def torchrun(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_ranks_draw_their_own_masks_split_the_batch_and_end_with_the_same_weights(tmp_path):
    torchrun(str(ROOT / "tests" / "_ddp_worker.py"), str(tmp_path))
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(rank0["drawn"]) == 3 and rank0["drawn"] != rank1["drawn"]
    assert rank0["weights"] == rank1["weights"]                           # DDP averaged the gradients
    assert len(rank0["batch"]) == len(rank1["batch"]) == 4                 # batch_size is the global batch
    assert not set(rank0["batch"]) & set(rank1["batch"])                   # from disjoint shards
    assert (tmp_path / "generator.pt").exists() and (tmp_path / "generator_log.csv").exists()


def test_train_py_under_torchrun_trains_both_stages_and_reports_once(tmp_path):
    result = torchrun("train.py", "--preset", "tiny", "--steps", "3", "--out", str(tmp_path), *SMALL,
                      *EAGER)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["generator"]["samples_per_class"] == 4
    assert result.stdout.count("accuracy") == 1                           # rank 0 alone evaluates and reports
    for name in ("tokenizer.pt", "tokens.pt", "generator.pt", "samples.png"):
        assert (tmp_path / name).exists(), name
