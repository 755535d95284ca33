"""The same training on a GPU (skipped where PyTorch sees none; run there with TRITON_INTERPRET=0 for real kernels)."""
import copy
import json

import pytest
import torch
from test_cli import TINY, run_cli

from shiftaddaug.augment import build_augmented

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def no_tf32(monkeypatch):
    # cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and later: compare float32 with float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.parametrize("op", ["shift", "add"])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_supernet_step_on_gpu_matches_cpu(op, mode, no_tf32):
    cpu = build_augmented("mobilenetv2_tiny", 10, op=op, aug_op="mult", remap="laplace", in_chans=1, input_size=28)
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(8, 1, 28, 28)
    grads = []
    for net, xx in ((cpu, x), (gpu, x.cuda())):
        net.train()
        net.set_active(mode)
        out = net(xx)
        out.square().mean().backward()
        grads.append((out.detach().cpu(), [p.grad.cpu() for p in net.parameters() if p.grad is not None]))
    (a, ga), (b, gb) = grads
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
    assert len(ga) == len(gb)
    for u, v in zip(ga, gb):  # the shift rounding may flip a rare weight at a rounding edge: compare in norm
        assert (u - v).norm() <= 1e-2 * u.norm() + 1e-5


def test_augmented_training_on_gpu_exports_a_cpu_model(tmp_path, capsys):
    code, _ = run_cli("train", *TINY, "op=add", "aug_op=mult", "epochs=1", "device=cuda", f"out_dir={tmp_path}",
                      "name=g", capsys=capsys)
    assert code == 0
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    code, res = run_cli("eval", str(tmp_path / "g" / "exported.pt"), "--json", capsys=capsys)
    assert code == 0  # eval runs on the CPU: at most one of the 64 test images may flip
    assert abs(json.loads(res.out)["top1"] - summary["final_acc"]) <= 100 / 64 + 1e-9
