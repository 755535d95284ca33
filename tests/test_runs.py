"""Run folders: one writer at a time, resume keeps the config, overwrite empties, files are written atomically."""
import json

import pytest
import torch

from shiftaddaug import checkpoint
from shiftaddaug.cli import main
from shiftaddaug.files import RunLock

TINY = ["dataset=synthetic", "model=resnet20", "epochs=1", "batch_size=32", "train_subset=64", "test_subset=32",
        "workers=0", "threads=1"]


def train(tmp_path, capsys, *extra):
    code = main(["train", *TINY, f"out_dir={tmp_path}", "name=r", *extra])
    return code, capsys.readouterr().err


def test_a_locked_run_folder_is_refused_naming_its_holder(tmp_path, capsys):
    lock = RunLock(tmp_path / "r").acquire()  # as if another process were training runs/r
    try:
        code, err = train(tmp_path, capsys)
        assert code == 2 and "in use by pid" in err and len(err.strip().splitlines()) == 1, err
        assert [p.name for p in (tmp_path / "r").iterdir()] == [".lock"]  # nothing of the refused run written
    finally:
        lock.release()
    assert train(tmp_path, capsys)[0] == 0  # released: the folder is free again
    assert not (tmp_path / "r" / ".lock").exists()


@pytest.mark.parametrize("change", ["lr=0.1", "seed=3", "op=shift", "batch_size=16", "train_subset=48"])
def test_resume_refuses_a_changed_config_and_lists_the_keys(tmp_path, capsys, change):
    assert train(tmp_path, capsys)[0] == 0
    before = (tmp_path / "r" / "summary.json").read_text()
    code, err = train(tmp_path, capsys, change, "epochs=2", "--resume")
    key = change.split("=")[0]
    assert code == 2 and key in err and "epochs" not in err.split("got")[1], err  # epochs may change
    assert (tmp_path / "r" / "summary.json").read_text() == before


def test_resume_may_add_epochs(tmp_path, capsys):
    assert train(tmp_path, capsys)[0] == 0
    assert train(tmp_path, capsys, "epochs=2", "threads=2", "--resume")[0] == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["epochs"] == 2


def test_overwrite_starts_from_an_empty_folder_and_keeps_foreign_files(tmp_path, capsys):
    assert train(tmp_path, capsys)[0] == 0
    stale = tmp_path / "r" / "exported.pt"
    stale.write_bytes(b"an exported model of another run")
    assert train(tmp_path, capsys, "overwrite=true")[0] == 0
    assert not stale.exists() and (tmp_path / "r" / "last.pt").exists()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    code, err = train(tmp_path, capsys, "overwrite=true")
    assert code == 2 and "notes.txt" in err and (tmp_path / "r" / "notes.txt").exists()


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", ".."])
def test_a_run_name_cannot_leave_out_dir(tmp_path, capsys, name):
    out = tmp_path / "out"
    code = main(["train", *TINY, f"out_dir={out}", f"name={name}"])
    err = capsys.readouterr().err
    assert code == 2 and "name" in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_an_interrupted_checkpoint_write_leaves_the_old_file_and_no_temporary(tmp_path, capsys, monkeypatch):
    assert train(tmp_path, capsys)[0] == 0
    old = (tmp_path / "r" / "last.pt").read_bytes()

    def half_written(obj, path):
        open(path, "wb").write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_written)
    assert train(tmp_path, capsys, "epochs=2", "--resume")[0] == 130
    assert (tmp_path / "r" / "last.pt").read_bytes() == old
    assert not [p.name for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]
    assert not (tmp_path / "r" / ".lock").exists()  # the interrupted run let go of its folder


def test_the_first_epoch_writes_best_pt_even_at_zero_accuracy_and_before_last_pt(tmp_path, capsys, monkeypatch):
    import shiftaddaug.train as loop

    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: {"loss": 2.3, "acc": 0.0})
    written, save = [], checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda obj, path, kind: (written.append(path.name), save(obj, path, kind)))
    assert train(tmp_path, capsys)[0] == 0
    assert written == ["best.pt", "last.pt"]
    assert torch.load(tmp_path / "r" / "best.pt", weights_only=True)["best_acc"] == 0.0


def test_divergence_stops_in_one_line_before_a_bad_step_or_checkpoint(tmp_path, capsys, monkeypatch):
    import shiftaddaug.train as loop

    real, calls = loop.train_step, []

    def poisoned(model, x, *args, **kw):  # the second epoch's first step meets a NaN weight
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                model.stem.conv.weight[0, 0, 0, 0] = float("nan")
        return real(model, x, *args, **kw)

    monkeypatch.setattr(loop, "train_step", poisoned)
    code, err = train(tmp_path, capsys, "epochs=2")
    assert code == 2 and [line.startswith("shiftaddaug: error") for line in err.strip().splitlines()][-1], err
    err = err.strip().splitlines()[-1]  # the lines before it are the progress bars of the epochs that ran
    assert "epoch 2, step 1" in err and "target loss is nan" in err and "stem.conv.weight" in err
    last = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (tmp_path / "r" / "summary.json").exists() and not (tmp_path / "r" / ".lock").exists()
    torch.save({**last, "model": {**last["model"], "stem.conv.weight": last["model"]["stem.conv.weight"] * torch.nan}},
               tmp_path / "nan.pt")
    assert main(["eval", str(tmp_path / "nan.pt")]) == 2 and "NaN" in capsys.readouterr().err


def test_a_loss_far_above_the_first_one_counts_as_divergence(tmp_path, capsys):
    code, err = train(tmp_path, capsys, "divergence_factor=0.5")
    assert code == 2 and "step 2" in err and "exceeds" in err and "no checkpoint was written" in err, err


def test_a_run_killed_mid_write_and_mid_epoch_resumes_to_the_unbroken_result(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "shiftaddaug", "train", "dataset=synthetic", "model=mobilenetv2_tiny", "op=shift",
            "aug_op=mult", "epochs=2", "batch_size=32", "train_subset=96", "test_subset=32", "workers=0", "threads=1",
            f"out_dir={tmp_path}"]
    assert subprocess.run([*args, "name=full"], capture_output=True).returncode == 0
    run = tmp_path / "cut"

    def kill_when(extra, ready):
        proc = subprocess.Popen([*args, "name=cut", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        return proc.wait()

    # 1: as the first checkpoint is being written (a temporary file is there), else just after it
    assert kill_when([], lambda: list(run.glob(".*.tmp")) or (run / "last.pt").exists()) == -signal.SIGKILL
    def again():  # a run killed before its first last.pt has nothing to resume: it starts over
        return ["--resume"] if (run / "last.pt").exists() else ["overwrite=true"]

    # 2: in the middle of epoch 2, 0.3 s after epoch 1's last.pt appeared (if the run is still going then)
    saved = []
    kill_when(again(), lambda: (run / "last.pt").exists() and (saved.append(time.time()) or
                                                               time.time() - saved[0] > 0.3))
    assert (run / "last.pt").exists()  # 3: a real resume, from epoch 1's checkpoint or later
    resumed = subprocess.run([*args, "name=cut", "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    for k, v in a["model"].items():  # weights, BN statistics, and the sampler's RNG state (extra state)
        assert torch.equal(v, b["model"][k]) if isinstance(v, torch.Tensor) else v == b["model"][k], k
    assert a["history"][-1]["test_acc"] == b["history"][-1]["test_acc"]
    assert not list(run.glob(".*.tmp")) and not (run / ".lock").exists()


def test_two_processes_on_one_run_folder_the_second_refuses_naming_the_first(tmp_path):
    import subprocess
    import sys
    import time

    # epochs enough that the first still runs while the second starts on a loaded host (it is killed below)
    args = [sys.executable, "-m", "shiftaddaug", "train", *TINY, "epochs=1000", f"out_dir={tmp_path}", "name=r"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "r" / ".lock").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run([*args, "overwrite=true"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"in use by pid {first.pid}" in second.stderr, second.stderr
    finally:
        first.kill()
        first.wait()
