"""Steps per second of a preset's training stage on this CPU: one process on every core, or one process per core
through torchrun (DDP over gloo, each process 1 thread and its share of the same global batch).

Each way runs `train.py --stage STAGE --steps N` in a scratch copy of a run folder (its tokenizer and token cache,
so the generator stage skips encoding) and reads the seconds the training loop logged between step `--skip` and
the last step, so start-up, compilation and the final evaluation are left out.

    python benchmarks/cpu_processes.py --ckpt runs/tiny --stage generator --steps 300
    python benchmarks/cpu_processes.py --ckpt runs/tiny --stage tokenizer --steps 400
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def seconds_per_step(log: Path, skip: int) -> float:
    """Mean seconds per optimizer step between logged step `skip` and the last logged step of a training log."""
    rows = [(int(r["step"]), float(r["time"])) for r in csv.DictReader(log.open())]
    (s0, t0), (s1, t1) = next(r for r in rows if r[0] >= skip), rows[-1]
    return (t1 - t0) / (s1 - s0)


def timed_run(ckpt: Path, preset: str, stage: str, steps: int, skip: int, processes: int, overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tokenizer.pt", "tokens.pt"):
            if stage == "generator" and (ckpt / name).exists():
                shutil.copy(ckpt / name, tmp)
        args = ["train.py", "--preset", preset, "--stage", stage, "--steps", str(steps), "--out", tmp,
                "--set", "eval_per_class=1", "--set", f"train_{stage}.sample_every={10 ** 9}", *overrides]
        env = dict(os.environ)
        if processes == 1:
            cmd = [sys.executable, *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   *args]
            env["OMP_NUM_THREADS"] = "1"
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return seconds_per_step(Path(tmp) / f"{stage}_log.csv", skip)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a run folder with tokenizer.pt (and tokens.pt)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--stage", default="generator", choices=["tokenizer", "generator"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--skip", type=int, default=50, help="steps left out at the start (warm-up)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each way, alternating")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    cores = os.cpu_count()
    ways = {f"1 process x {cores} threads": 1, f"{cores} processes x 1 thread (torchrun)": cores}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, processes in ways.items():
            times[name].append(timed_run(Path(args.ckpt), args.preset, args.stage, args.steps, args.skip, processes,
                                         args.overrides))
            print(f"{name:<36} {1e3 * times[name][-1]:7.1f} ms/step", flush=True)
    best = {name: min(t) for name, t in times.items()}
    one, many = best.values()
    print(f"{args.preset} {args.stage}, same global batch, best of {args.repeats}: "
          + ", ".join(f"{name} {1e3 * t:.1f} ms/step" for name, t in best.items())
          + f"; speed-up {one / many:.2f}x")


if __name__ == "__main__":
    main()
