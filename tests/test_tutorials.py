"""The tutorials run as a reader runs them: as scripts, start to finish, writing their plots."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tutorial(name: str, out: Path) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "tutorials" / name), "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_01_masked_decoding(tmp_path):
    stdout = run_tutorial("01_masked_decoding.py", tmp_path)
    for png in ("schedules.png", "mask_rates.png"):
        assert (tmp_path / png).stat().st_size > 0, f"{png} was not written"
    # the step-by-step canvas: a header per step, then the 8 rows of the 8x8 grid
    lines = stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if line.strip().startswith("after step")]
    assert len(headers) == 8
    assert "0 still masked" in lines[headers[-1]]
    final = [line.strip() for line in lines[headers[-1] + 1: headers[-1] + 9]]
    assert all(len(row) == 8 and set(row) <= set("0123456789") for row in final), final  # no '.' left
    first = [line.strip() for line in lines[headers[0] + 1: headers[0] + 9]]
    assert "." in "".join(first)                                    # ...and it started mostly masked


def test_05_diffusion_head(tmp_path):
    stdout = run_tutorial("05_diffusion_head.py", tmp_path)
    assert (tmp_path / "diffusion_head.png").stat().st_size > 0
    spread = {line.split(":")[0].strip(): float(line.rsplit("std", 1)[1]) for line in stdout.splitlines()
              if "std" in line and ("temperature" in line or "guidance" in line)}
    # the head learned the blobs (data std 0.1), a low temperature narrows them, and guidance does not widen them
    assert 0.05 < spread["temperature 1.0"] < 0.15 and spread["temperature 0.3"] < 0.5 * spread["temperature 1.0"]
    assert spread["guidance 2"] <= spread["no guidance"] * 1.1
