"""benchmarks/throughput.py: direct and augmented steps are timed, the bound is printed, --profile lists ops."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

THROUGHPUT = Path(__file__).parents[1] / "benchmarks" / "throughput.py"


def test_throughput_times_direct_and_aug_steps_and_profiles_them():
    args = [sys.executable, str(THROUGHPUT), "--ops", "shift", "--aug", "--size", "16", "--batch", "4", "--steps",
            "1", "--warmup", "1", "--profile", "--device", "cpu"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "direct shift" in res.stdout and "aug    shift" in res.stdout and "bound 1 +" in res.stdout
    assert res.stdout.count("aten::") >= 10  # one profiler table per timed model, its top ops by name


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_throughput_refuses_a_gpu_it_does_not_have_in_one_line():
    res = subprocess.run([sys.executable, str(THROUGHPUT), "--device", "cuda"], capture_output=True, text=True)
    assert res.returncode != 0 and res.stderr.strip().startswith("error:") and "no GPU" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
