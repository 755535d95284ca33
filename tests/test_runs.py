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
