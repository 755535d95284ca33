"""Distributed training: torchrun with 2 CPU processes (gloo) against 1 process with the same global batch, and a
killed 2-process run resumed."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from shiftaddaug.data import build_loaders

COMMON = ["dataset=synthetic", "model=resnet20", "op=shift", "train_subset=128", "test_subset=64", "workers=0",
          "threads=1", "warmup_epochs=0"]


def launch(procs: int, *args: str, **popen):
    """``shiftaddaug train`` as one process, or under torchrun as ``procs`` (``--standalone``: a free port)."""
    head = [sys.executable, "-m", "shiftaddaug"] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m",
         "shiftaddaug"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen([*head, "train", *COMMON, *args], env=env, **popen)
    return subprocess.run([*head, "train", *COMMON, *args], env=env, capture_output=True, text=True, timeout=600)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun's workers run in their own sessions)."""
    children = {}
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def metrics(run) -> list[dict]:
    return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(open(run / "metrics.csv"))]


def test_shards_of_the_in_memory_loader_together_are_the_one_process_batches():
    one = build_loaders("synthetic", None, 32, 32, train_subset=100, workers=0)
    two = [build_loaders("synthetic", None, 16, 32, train_subset=100, workers=0, shard=(r, 2)) for r in (0, 1)]
    for loaders in (one, *two):
        loaders.train.set_epoch(3)
    assert len(two[0].train) == len(two[1].train) == len(one.train) == 4  # 32 32 32 4 = twice 16 16 16 2
    # the same images (the augmentation draws differ), batch by batch
    for (_, y), (_, y0), (_, y1) in zip(one.train, two[0].train, two[1].train):
        assert sorted(y.tolist()) == sorted(y0.tolist() + y1.tolist())
    odd = [build_loaders("synthetic", None, 16, 32, train_subset=99, workers=0, shard=(r, 2)) for r in (0, 1)]
    assert odd[0].train.num_samples == odd[1].train.num_samples == 49  # equal shares: the same number of steps
    tests = [sorted(torch.cat([y for _, y in t.test]).tolist()) for t in two]
    assert sorted(tests[0] + tests[1]) == sorted(torch.cat([y for _, y in one.test]).tolist())  # each image once


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    # ShiftAddAug with NetAug's factors on every step: two backward passes a step (no_sync, then one all-reduce),
    # unused remaps. lr is per batch_size images: 2 x 16 at lr 0.05 is the global batch 32 at lr 0.1
    aug = ("aug_op=mult", "aug_rate=1.0", "aug_scale=1.0")
    one = launch(1, "batch_size=32", "lr=0.1", "epochs=2", *aug, f"out_dir={tmp_path}", "name=one")
    two = launch(2, "batch_size=16", "lr=0.05", "epochs=2", *aug, f"out_dir={tmp_path}", "name=two")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("epoch 2/2") == 1  # rank 0 reports, rank 1 is quiet
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["lr"] for r in m1] == pytest.approx([r["lr"] for r in m2])
    # the same images per global step; BatchNorm's batch statistics (16 against 32 images) and the augmentation
    # draws differ, so the numbers agree only closely
    for a, b in zip(m1, m2):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.1 * a["train_loss"]
        assert abs(a["test_acc"] - b["test_acc"]) <= 15  # 64 test images: one image is 1.6 pp
    s = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s["device"] == "2xcpu" and (tmp_path / "two" / "exported.pt").exists()


def test_a_killed_two_process_run_resumes_on_another_number_of_processes(tmp_path):
    run = tmp_path / "cut"
    proc = launch(2, "batch_size=16", "epochs=2", "aug_op=mult", f"out_dir={tmp_path}", "name=cut",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not (run / "last.pt").exists():
        time.sleep(0.05)
    kill_tree(proc.pid)  # torchrun and both workers, as a preempted job
    proc.wait()
    time.sleep(0.5)  # the workers' exit
    assert (run / "last.pt").exists() and not (run / "summary.json").exists()
    done = len(metrics(run))
    resumed = launch(1, "batch_size=16", "epochs=2", "aug_op=mult", f"out_dir={tmp_path}", "name=cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2] and done < 2
    # one process now: lr per 16 images, half the two processes' (the schedule's position is kept)
    assert rows[-1]["lr"] >= 0 and json.loads((run / "summary.json").read_text())["device"] == "2xcpu+cpu"
