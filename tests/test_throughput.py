"""benchmarks/throughput.py: direct and augmented steps are timed on the default schedule, --profile lists ops."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

THROUGHPUT = Path(__file__).parents[1] / "benchmarks" / "throughput.py"


def test_throughput_times_direct_and_aug_steps_and_profiles_them(tmp_path):
    args = [sys.executable, str(THROUGHPUT), "--ops", "shift", "--aug", "--size", "16", "--batch", "4", "--steps",
            "4", "--warmup", "1", "--profile", "--device", "cpu", "--record", str(tmp_path / "t.json")]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "direct shift" in res.stdout and "aug    shift" in res.stdout and "target's MACs" in res.stdout
    assert "2 of 4 steps augmented (1 with widths; aug_rate 0.5)" in res.stdout  # shift's default rate, as trained
    assert res.stdout.count("aten::") >= 10  # one profiler table per timed model, its top ops by name
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["step"] for r in rows] == ["direct", "shiftaddaug"] and rows[1]["width_factors"] == [1.0, 1.2, 1.4]
    assert rows[1]["x_direct"] == rows[0]["images_per_s"] / rows[1]["images_per_s"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_throughput_refuses_a_gpu_it_does_not_have_in_one_line():
    res = subprocess.run([sys.executable, str(THROUGHPUT), "--device", "cuda"], capture_output=True, text=True)
    assert res.returncode != 0 and res.stderr.strip().startswith("error:") and "no GPU" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
