import csv
import json
import subprocess
import sys

import pytest
import torch

from shiftaddaug.cli import main
from shiftaddaug.train import run_cost

TINY = ["dataset=synthetic", "model=mobilenetv2_tiny", "epochs=2", "batch_size=64", "train_subset=128",
        "test_subset=64", "warmup_epochs=0.5", "workers=0"]


def run_cli(*args, capsys=None):
    code = main(list(args))
    return code, (capsys.readouterr() if capsys else None)


@pytest.mark.parametrize("op", ["shift", "add"])
def test_train_writes_metrics_checkpoints_and_resumes(tmp_path, op, capsys):
    out = str(tmp_path)
    code, _ = run_cli("train", *TINY, f"op={op}", f"out_dir={out}", "name=r", capsys=capsys)
    assert code == 0
    run = tmp_path / "r"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["macs"][op] > 0 and summary["epochs"] == 2 and (run / "best.pt").exists()

    # refuses to clobber, then resumes to a longer schedule
    code, err = run_cli("train", *TINY, f"op={op}", f"out_dir={out}", "name=r", capsys=capsys)
    assert code == 2 and "--resume" in err.err
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["devices"] == [summary["device"]]
    ckpt["devices"] = ["cuda:7"]  # as if its first epochs ran on a GPU: the summary names both (their times differ)
    torch.save(ckpt, run / "last.pt")
    code, err = run_cli("train", *TINY, f"op={op}", f"out_dir={out}", "name=r", "aug_op=mult", "--resume",
                        capsys=capsys)
    assert code == 2 and "another model config" in err.err and len(err.err.strip().splitlines()) == 1, err.err
    code, _ = run_cli("train", *TINY, f"op={op}", f"out_dir={out}", "name=r", "epochs=3", "--resume",
                      capsys=capsys)
    assert code == 0
    assert json.loads((run / "summary.json").read_text())["device"] == f"cuda:7+{summary['device']}"
    assert [int(r["epoch"]) for r in csv.DictReader(open(run / "metrics.csv"))] == [1, 2, 3]

    code, res = run_cli("eval", str(run / "last.pt"), "--json", capsys=capsys)
    assert code == 0
    last_logged = float(list(csv.DictReader(open(run / "metrics.csv")))[-1]["test_acc"])
    assert json.loads(res.out.strip().splitlines()[-1])["top1"] == pytest.approx(last_logged)


@pytest.mark.parametrize("calib", [0, 256])
def test_training_learns_synthetic_data(tmp_path, capsys, calib):
    code, _ = run_cli("train", "dataset=synthetic", "model=resnet20", "epochs=3", "batch_size=16",
                      "test_subset=128", "lr=0.1", f"out_dir={tmp_path}", "name=l", "workers=0",
                      f"bn_calibration_images={calib}", capsys=capsys)
    assert code == 0
    acc = json.loads((tmp_path / "l" / "summary.json").read_text())["final_acc"]
    assert acc > 50, acc  # 10 classes: chance is 10 %


def test_yaml_config_and_bad_inputs(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resnet20\nop: shift\nepochs: 1\ndataset: synthetic\ntrain_subset: 64\ntest_subset: 32\n"
                   f"out_dir: {tmp_path}\nworkers: 0\n")
    code, _ = run_cli("train", str(cfg), "name=y", capsys=capsys)
    assert code == 0 and (tmp_path / "y" / "last.pt").exists()
    for bad, msg in [(["train", "epochz=3"], "unknown config key 'epochz'"),
                     (["train", "model=resnet99"], "unknown model 'resnet99'"),
                     (["train", "op=mul"], "unknown op 'mul'"),
                     (["train", str(tmp_path / "missing.yaml")], "not found"),
                     (["train", "dataset=cifar10", f"data_dir={tmp_path}", "name=z", f"out_dir={tmp_path}"],
                      "cifar-10-batches-py")]:
        code, res = run_cli(*bad, capsys=capsys)
        assert code == 2 and msg in res.err and len(res.err.strip().splitlines()) == 1, res.err
    assert not (tmp_path / "z").exists()  # nothing half-written when the data is missing


def test_bad_device_is_one_line_error(tmp_path, capsys):
    code, res = run_cli("train", *TINY, "device=tpu", f"out_dir={tmp_path}", capsys=capsys)
    assert code == 2 and "device must be auto, cpu, cuda or cuda:N" in res.err
    if not torch.cuda.is_available():
        code, res = run_cli("train", *TINY, "device=cuda", f"out_dir={tmp_path}", capsys=capsys)
        assert code == 2 and "sees no GPU" in res.err and not list(tmp_path.iterdir())


def test_corrupt_checkpoint_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, res = run_cli("eval", str(bad), capsys=capsys)
    assert code == 2 and "corrupt" in res.err and len(res.err.strip().splitlines()) == 1


def test_profile_prints_macs_per_operator(capsys):
    code, res = run_cli("profile", "mobilenetv2_tiny", "--op", "add", "--json", capsys=capsys)
    assert code == 0
    d = json.loads(res.out)
    assert d["params"] == 750280 and d["macs"]["add"] > 20e6 and d["macs"]["mult"] < 3e6
    code, res = run_cli("profile", "mcunet", "--layers", capsys=capsys)
    assert code == 0 and "peak activation" in res.out and "blocks.1.expand.conv" in res.out


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "shiftaddaug", "models"], capture_output=True, text=True)
    assert r.returncode == 0 and "mcunet" in r.stdout


def test_augmented_training_exports_the_plain_target(tmp_path, capsys):
    code, _ = run_cli("train", *TINY, "op=add", "aug_op=mult", "remap=laplace", "epochs=1", f"out_dir={tmp_path}",
                      "name=a", capsys=capsys)
    assert code == 0
    run = tmp_path / "a"
    exported = torch.load(run / "exported.pt", weights_only=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params"] == 750280 - 449 * 990  # mobilenetv2_tiny with 10 classes instead of 1000
    code, a = run_cli("eval", str(run / "exported.pt"), "--json", capsys=capsys)
    code2, b = run_cli("eval", str(run / "last.pt"), "--json", capsys=capsys)
    assert code == code2 == 0
    assert json.loads(a.out)["top1"] == json.loads(b.out)["top1"] == summary["final_acc"]
    code, res = run_cli("export", str(run / "last.pt"), "-o", str(tmp_path / "e.pt"), capsys=capsys)
    assert code == 0
    again = torch.load(tmp_path / "e.pt", weights_only=False)["model"]
    assert all(torch.equal(again[k], exported["model"][k]) for k in again)
    code, res = run_cli("compare", str(run), str(run), capsys=capsys)
    assert code == 0 and "ShiftAddAug mult/laplace" in res.out and "exported model" in res.out
    # a supernet checkpoint that does not fit its config, or whose config this version cannot read
    ckpt = torch.load(run / "last.pt", weights_only=False)
    ckpt["model"].pop(next(iter(ckpt["model"])))
    torch.save(ckpt, tmp_path / "cut.pt")
    ckpt["config"]["no_such_key"] = 1
    torch.save(ckpt, tmp_path / "future.pt")
    for bad, msg in (("cut.pt", "does not fit model mobilenetv2_tiny op=add"), ("future.pt", "no_such_key")):
        for cmd in ("export", "eval"):
            code, res = run_cli(cmd, str(tmp_path / bad), *(["-o", str(tmp_path / "x.pt")] if cmd == "export"
                                                            else []), capsys=capsys)
            assert code == 2 and msg in res.err and len(res.err.strip().splitlines()) == 1, res.err
    assert not (tmp_path / "x.pt").exists()
    code, res = run_cli("compare", str(tmp_path / "nope"), capsys=capsys)
    assert code == 2 and "no finished run" in res.err
    # the summary reports the exported model's energy; plot rebuilds the same model from the config
    assert summary["energy_uj"] > 0 and summary["hw"]["energy_by_class"]["add"] > 0
    assert run_cost(summary)["energy_pj"] == pytest.approx(summary["energy_uj"] * 1e6)
    code, res = run_cli("plot", str(run), "-o", str(tmp_path / "p.png"), capsys=capsys)
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 10_000


def test_resumed_augmented_run_equals_an_unbroken_one(tmp_path, capsys, monkeypatch):
    from shiftaddaug import checkpoint

    args = [*TINY, "op=shift", "aug_op=mult", f"out_dir={tmp_path}"]
    assert run_cli("train", *args, "name=full", capsys=capsys)[0] == 0
    save = checkpoint.save

    def save_then_crash(state, path):  # the run dies right after its first epoch's checkpoint
        save(state, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_crash)
    assert run_cli("train", *args, "name=cut", capsys=capsys)[0] == 130
    monkeypatch.setattr(checkpoint, "save", save)
    assert run_cli("train", *args, "name=cut", "--resume", capsys=capsys)[0] == 0
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
