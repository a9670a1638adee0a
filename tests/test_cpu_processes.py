"""benchmarks/cpu_processes.py: seconds per step come from the training log, warm-up steps left out."""
from benchmarks.cpu_processes import seconds_per_step


def test_seconds_per_step_leaves_out_the_warm_up(tmp_path):
    log = tmp_path / "generator_log.csv"
    # 5 s of warm-up for the first 10 steps, then 0.2 s a step
    log.write_text("step,lr,time,loss\n0,0.1,0.0,5\n10,0.1,5.0,4\n20,0.1,7.0,3\n29,0.1,8.8,3\n")
    assert abs(seconds_per_step(log, skip=10) - 0.2) < 1e-9
    assert abs(seconds_per_step(log, skip=0) - 8.8 / 29) < 1e-9
