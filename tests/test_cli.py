import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from shiftaddaug.cli import main
from shiftaddaug.runs import run_cost

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
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["devices"] == [summary["device"]] and ckpt["kind"] == "model"
    ckpt["devices"] = ["cuda:7"]  # as if its first epochs ran on a GPU: the summary names both (their times differ)
    torch.save(ckpt, run / "last.pt")
    code, err = run_cli("train", *TINY, f"op={op}", f"out_dir={out}", "name=r", "aug_op=mult", "--resume",
                        capsys=capsys)
    assert code == 2 and "aug_op" in err.err and len(err.err.strip().splitlines()) == 1, err.err
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
                     (["train", "op=mul", f"out_dir={tmp_path}", "name=z"], "unknown operator 'mul'"),
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
    exported = torch.load(run / "exported.pt", weights_only=True)
    assert exported["kind"] == "exported" and torch.load(run / "last.pt", weights_only=True)["kind"] == "supernet"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params"] == 750280 - 449 * 990  # mobilenetv2_tiny with 10 classes instead of 1000
    code, a = run_cli("eval", str(run / "exported.pt"), "--json", capsys=capsys)
    code2, b = run_cli("eval", str(run / "last.pt"), "--json", capsys=capsys)
    assert code == code2 == 0
    assert json.loads(a.out)["top1"] == json.loads(b.out)["top1"] == summary["final_acc"]
    code, res = run_cli("export", str(run / "last.pt"), "-o", str(tmp_path / "e.pt"), capsys=capsys)
    assert code == 0
    again = torch.load(tmp_path / "e.pt", weights_only=True)["model"]
    assert all(torch.equal(again[k], exported["model"][k]) for k in again)
    code, res = run_cli("compare", str(run), str(run), capsys=capsys)
    assert code == 0 and "ShiftAddAug mult/laplace" in res.out and "exported model" in res.out
    # a supernet checkpoint that does not fit its config, or whose config this version cannot read
    ckpt = torch.load(run / "last.pt", weights_only=True)
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

    def save_then_crash(state, path, kind):  # the run dies right after its first epoch's checkpoint
        save(state, path, kind)
        if path.name == "last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_crash)
    assert run_cli("train", *args, "name=cut", capsys=capsys)[0] == 130
    monkeypatch.setattr(checkpoint, "save", save)
    assert run_cli("train", *args, "name=cut", "--resume", capsys=capsys)[0] == 0
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


class _Payload:
    def __reduce__(self):  # unpickling this would run a shell command
        return (os.system, ("touch pwned",))


def test_a_checkpoint_with_a_code_payload_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": 2, "kind": "model", "model": {}, "config": {}, "num_classes": 10, "in_chans": 1,
                "x": _Payload()}, tmp_path / "evil.pt")
    for cmd in (["eval"], ["export"]):
        code, res = run_cli(*cmd, str(tmp_path / "evil.pt"), capsys=capsys)
        assert code == 2 and "refused" in res.err and len(res.err.strip().splitlines()) == 1, res.err
    assert not (tmp_path / "pwned").exists()


def test_checkpoints_dispatch_on_their_kind_and_version(tmp_path, capsys):
    from shiftaddaug import checkpoint

    code, _ = run_cli("train", *TINY, "op=shift", "epochs=1", f"out_dir={tmp_path}", "name=d", capsys=capsys)
    assert code == 0
    code, res = run_cli("export", str(tmp_path / "d" / "last.pt"), capsys=capsys)
    assert code == 2 and "not a ShiftAddAug supernet" in res.err  # a plain model's checkpoint: nothing to export
    ckpt = torch.load(tmp_path / "d" / "last.pt", weights_only=True)
    torch.save({**ckpt, "format": 99}, tmp_path / "future.pt")
    for k in ("format", "kind"):
        torch.save({key: v for key, v in ckpt.items() if key != k}, tmp_path / f"no_{k}.pt")
    for bad in ("future.pt", "no_format.pt", "no_kind.pt"):
        code, res = run_cli("eval", str(tmp_path / bad), capsys=capsys)
        assert code == 2 and bad in res.err and len(res.err.strip().splitlines()) == 1, res.err
    with pytest.raises(ValueError):
        checkpoint.save({}, tmp_path / "x.pt", "weights")


@pytest.mark.parametrize("override", ["lr=abc", "seed=abc", "momentum=-1", "label_smoothing=2", "threads=-1",
                                      "warmup_epochs=abc", "grad_clip=abc", "input_size=abc", "input_size=0",
                                      "train_subset=-5", "epochs=true", "mf_stem_head=maybe", "channels_last=2",
                                      "weight_bits=1", "eta=-1", "shift_mode=x", "dropout=1.5", "aug_op=both"])
def test_every_ill_typed_or_out_of_range_value_is_one_line_naming_the_key(tmp_path, capsys, override):
    code, res = run_cli("train", override, f"out_dir={tmp_path}", capsys=capsys)
    key, value = override.split("=")
    assert code == 2 and len(res.err.strip().splitlines()) == 1, res.err
    assert key in res.err and value.lower() in res.err.lower()
    assert not list(tmp_path.iterdir())  # nothing written


def test_scientific_notation_is_a_number_and_layer_options_reach_the_layers(tmp_path):
    from shiftaddaug.build import build_model
    from shiftaddaug.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 1e-3\nweight_decay: 4e-5\nop: shift\n")
    c = load_config(str(cfg), ["eta=2.5E-1", "weight_bits=4", "dropout=0.2", "model=resnet20"])
    assert (c.lr, c.weight_decay, c.eta) == (1e-3, 4e-5, 0.25)
    shifts = [m for m in build_model(c, 10, 3).modules() if hasattr(m, "weight_bits")]
    assert shifts and {m.weight_bits for m in shifts} == {4}
    c = load_config(overrides=["op=add", "eta=0", "model=resnet20"])
    adders = [m for m in build_model(c, 10, 3).modules() if hasattr(m, "eta")]
    assert adders and {m.eta for m in adders} == {None}  # eta=0 switches adaptive gradient scaling off
    aug = build_model(load_config(overrides=["op=add", "eta=0.1", "aug_op=mult", "model=resnet20"]), 10, 3)
    etas = [c.op_kw["add"]["eta"] * c.gain["add"] ** 2 for c in aug.elastic_convs() if "add" in c.ops]
    assert etas and etas == pytest.approx([0.1] * len(etas))


def test_bad_cli_arguments_and_paths_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00binary")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "summary.json").write_text("{}")
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "summary.json").write_text("[]")
    (tmp_path / "ro").write_text("a file where a folder is expected")
    cases = [["eval", "x.pt", "--batch-size", "0"], ["eval", "x.pt", "--batch-size", "-1"],
             ["profile", "resnet20", "--in-chans", "0"], ["profile", "resnet20", "--input-size", "-5"],
             ["profile", "resnet20", "--num-classes", "0"], ["train", str(tmp_path)],
             ["train", str(tmp_path / "bin.yaml")],
             ["compare", str(tmp_path / "empty")], ["plot", str(tmp_path / "list")],
             ["train", *TINY, f"out_dir={tmp_path / 'ro'}", "name=x"], ["train", "workers=-1"]]
    for args in cases:
        code, res = run_cli(*args, capsys=capsys)
        assert code == 2 and len(res.err.strip().splitlines()) == 1 and res.err.startswith("shiftaddaug: error"), \
            (args, res.err)


def test_export_refuses_a_folder_and_names_a_mismatched_tensor(tmp_path, capsys):
    code, _ = run_cli("train", *TINY, "op=shift", "aug_op=mult", "epochs=1", f"out_dir={tmp_path}", "name=a",
                      capsys=capsys)
    assert code == 0
    code, res = run_cli("export", str(tmp_path / "a" / "last.pt"), "-o", str(tmp_path), capsys=capsys)
    assert code == 2 and "is a folder" in res.err
    ckpt = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    key = "stem.conv.weight"
    ckpt["model"][key] = ckpt["model"][key][:3]
    torch.save(ckpt, tmp_path / "cut.pt")
    code, res = run_cli("eval", str(tmp_path / "cut.pt"), capsys=capsys)
    assert code == 2 and key in res.err and "torch.Size" in res.err and len(res.err.strip().splitlines()) == 1
