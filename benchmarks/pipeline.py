"""Time a whole `train.py` run and report what it reached: wall time per stage, peak memory, tokenizer PSNR and
codebook use, generator attribute accuracy per class and spread. The per-preset rows of docs/results.md come
from this script.

    python benchmarks/pipeline.py --preset tiny                     # both stages
    python benchmarks/pipeline.py --preset tiny --stage tokenizer
    python benchmarks/pipeline.py --preset tiny-mar
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--stage", default="all")
    p.add_argument("--out", default=None, help="run folder (default: runs/bench-<preset>)")
    p.add_argument("extra", nargs="*", help="more train.py arguments, after --")
    args = p.parse_args()
    out = Path(args.out or ROOT / "runs" / f"bench-{args.preset}")
    (out / "metrics.json").unlink(missing_ok=True)
    cmd = [sys.executable, str(ROOT / "train.py"), "--preset", args.preset, "--stage", args.stage, "--out", str(out),
           *args.extra]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2   # ru_maxrss is in KiB on Linux
    metrics = json.loads((out / "metrics.json").read_text())

    print(f"\n## {args.preset} ({args.stage})\n")
    print(f"- wall time, whole command: {wall / 60:.1f} min")
    for stage, seconds in metrics.get("seconds", {}).items():
        print(f"- {stage}: {seconds / 60:.1f} min")
    print(f"- peak resident memory: {peak_gb:.2f} GB")
    if "tokenizer" in metrics:
        t = metrics["tokenizer"]
        line = f"- tokenizer on {t['images']} held-out images: PSNR {t['psnr']:.2f} dB"
        if "codebook_usage" in t:
            line += (f", codebook usage {t['codebook_usage']:.1%} of {t['codebook_size']} codes, "
                     f"perplexity {t['perplexity']:.1f}")
        print(line)
    gen = metrics.get("generator", {})
    if "attribute_accuracy" in gen:
        acc = gen["attribute_accuracy"]
        print(f"- generator: attribute accuracy {acc['accuracy']:.1%} over {gen['samples_per_class']} samples per "
              f"class (shape {acc['shape_accuracy']:.1%}, colour {acc['colour_accuracy']:.1%})")
        print("  - per class: " + ", ".join(f"{name} {row['accuracy']:.0%}" for name, row in acc["per_class"].items()))
        print("  - spread vs data (relative std difference): "
              + ", ".join(f"{k} {v:+.1%}" for k, v in gen["spread_vs_data"].items()))


if __name__ == "__main__":
    main()
