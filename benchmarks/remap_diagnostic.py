"""Why did ShiftAddAug with the fc remap collapse? Short isolation runs of the supernet's pieces.

    python benchmarks/remap_diagnostic.py
MobileNetV2-Tiny, shift target, Fashion-MNIST: 3,000 training images, 2 epochs, batch 128, SGD Nesterov lr 0.05.
Prints the training accuracy of epoch 2 for each setting (a diagnostic, not a converged result).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from shiftaddaug.augment import build_augmented
from shiftaddaug.data import build_loaders
from shiftaddaug.models import create_model
from shiftaddaug.train import param_groups


def run(model, loader, aug: bool, remap_lr_scale: float = 1.0, epochs: int = 2) -> float:
    torch.manual_seed(0)
    opt = torch.optim.SGD(param_groups(model, 4e-5, 0.05, remap_lr_scale), momentum=0.9, nesterov=True)
    supernet = hasattr(model, "set_active")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        correct = seen = 0
        for x, y in loader:
            x = x.contiguous(memory_format=torch.channels_last)
            if supernet:
                model.set_active("min")
            out = model(x)
            opt.zero_grad()
            F.cross_entropy(out, y, label_smoothing=0.1).backward()
            if aug:
                model.set_active("random")
                F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
                model.set_active("min")
            opt.step()
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
    return 100 * correct / seen


def main() -> None:
    loader, *_ = build_loaders("fashion-mnist", None, 128, 28, train_subset=3000)
    kw = dict(in_chans=1, input_size=28)

    def net(remap):
        return build_augmented("mobilenetv2_tiny", 10, op="shift", aug_op="mult", remap=remap, **kw)

    rows = [
        ("direct shift (plain model)", lambda: run(create_model("mobilenetv2_tiny", 10, op="shift", **kw), loader,
                                                   False)),
        ("supernet target only, remap=none", lambda: run(net("none"), loader, False)),
        ("supernet target only, remap=laplace", lambda: run(net("laplace"), loader, False)),
        ("supernet target only, remap=fc, remap lr x1", lambda: run(net("fc"), loader, False, 1.0)),
        ("supernet target only, remap=fc, remap lr x0.01", lambda: run(net("fc"), loader, False, 0.01)),
        ("supernet target only, remap=bins, remap lr x1", lambda: run(net("bins"), loader, False, 1.0)),
        ("supernet target only, remap=fc, remap lr x0 (frozen)", lambda: run(net("fc"), loader, False, 0.0)),
        ("supernet target + augmented pass, remap=none", lambda: run(net("none"), loader, True)),
        ("supernet target + augmented pass, remap=laplace", lambda: run(net("laplace"), loader, True)),
    ]
    for name, fn in rows:
        print(f"{name:55s} {fn():6.2f} % (epoch-2 training top-1)", flush=True)


if __name__ == "__main__":
    main()
