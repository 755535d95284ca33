import gzip
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels run on the CPU interpreter in tests

import numpy as np
import pytest
import torch

# under pytest-xdist (make test: a worker per core) each worker computes on one thread, the cores are the workers'
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def write_idx(path, array, gz):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.fixture
def fake_fmnist(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        gz = split == "train"  # one split compressed, one raw: both layouts must load
        ext = ".gz" if gz else ""
        write_idx(tmp_path / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 255, (n, 28, 28)), gz)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte{ext}", rng.integers(0, 10, (n,)), gz)
    return tmp_path
