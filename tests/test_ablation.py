"""benchmarks/ablation.py: parallel runs, dependent rows, reuse of finished runs, and the report from records."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

ABLATION = Path(__file__).parents[1] / "benchmarks" / "ablation.py"
sys.path.insert(0, str(ABLATION.parent))  # the benchmark scripts' helpers import as modules


def ablation(out, *extra, rows=("direct", "laplace", "hybrid", "matched")):
    args = [sys.executable, str(ABLATION), "--dataset", "synthetic", "--ops", "shift", "--epochs", "1",
            "--train-subset", "32", "--seeds", "0", "--threads", "1", "--rows", *rows, "--out", str(out), *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def test_parallel_ablation_runs_dependent_rows_after_the_rows_they_follow(tmp_path):
    res = ablation(tmp_path, "--jobs", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    table = (tmp_path / "ablation.md").read_text()
    assert "2 runs at a time" in table
    for row in ("| direct |", "| ShiftAddAug, remap laplace |", "| hybrid aug, remap laplace |", "(time-matched) |"):
        assert row in table
    # the default shift remap (bins) has no row here: the control takes the laplace row's wall-clock, and says so
    assert "wall-clock of `mult` augmentation with remap laplace (the default, bins, has no runs" in table
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 4 and all((tmp_path / "runs" / r / "train.log").stat().st_size > 0 for r in runs)
    assert all((tmp_path / "runs" / r / "summary.json").exists() for r in runs)
    again = ablation(tmp_path, "--report")  # finished runs are read back, nothing trains
    assert again.returncode == 0 and "==" not in again.stdout
    assert (tmp_path / "ablation.md").read_text().split("\n", 1)[1] == table.split("\n", 1)[1]
    saved = records(tmp_path / "ablation.json", "--ops", "shift", "--seeds", "0", out=tmp_path / "saved")
    assert saved.returncode == 0, saved.stderr[-2000:]  # the saved records give the same table, without run folders
    rows_of = lambda text: [line for line in text.splitlines() if line.startswith("|")]  # noqa: E731
    assert rows_of((tmp_path / "saved" / "ablation.md").read_text()) == rows_of(table)


RECORDS_60K = ABLATION.parent / "records" / "ablation_60k_e5.json"


def records(*args, out):
    return subprocess.run([sys.executable, str(ABLATION), "--records", *map(str, args), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)


def test_report_gives_each_rows_mean_spread_and_gain_over_direct_from_records(tmp_path):
    from ablation import RECORD_KEYS

    accs = {("direct", "direct"): [80.0, 82.5, 81.0], ("bins", "ShiftAddAug, remap bins"): [84.0, 85.5, 83.0]}
    recs = [{**dict.fromkeys(RECORD_KEYS, 0), "key": key, "row": row, "op": "shift", "seed": seed, "epochs": 3,
             "final_acc": acc, "device": "cpu", "macs": {"shift": 1_000_000}, "curve": [acc - 5, acc - 1, acc],
             "train_time_s": 10.0 * (seed + 1)}
            for (key, row), values in accs.items() for seed, acc in enumerate(values)]
    (tmp_path / "recs.json").write_text(json.dumps(recs))
    res = records(tmp_path / "recs.json", "--ops", "shift", "--seeds", "0", "1", "2", out=tmp_path / "out")
    assert res.returncode == 0, res.stderr[-2000:]
    table = (tmp_path / "out" / "ablation.md").read_text()
    (m_d, s_d), (m_b, s_b) = ((statistics.mean(v), statistics.stdev(v)) for v in accs.values())
    assert f"| direct | 3 | 3 | {m_d:.2f} ± {s_d:.2f} | +0.00 | 20 CPU |" in table
    assert f"| ShiftAddAug, remap bins | 3 | 3 | {m_b:.2f} ± {s_b:.2f} | {m_b - m_d:+.2f} |" in table
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 10_000
    one = records(tmp_path / "recs.json", "--ops", "shift", "--seeds", "1", "--rows", "bins", out=tmp_path / "one")
    assert one.returncode == 0 and "| ShiftAddAug, remap bins | 1 | 3 | 85.50 ± 0.00 | n/a" in \
        (tmp_path / "one" / "ablation.md").read_text()  # filtered by seed and row; no direct row to compare with


def test_the_saved_full_data_records_load_with_every_row_of_both_operators(tmp_path):
    res = records(RECORDS_60K, out=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    shift, add = (tmp_path / "ablation.md").read_text().split("| add: row")
    assert shift.count("| 2 | 5 |") == 8 and add.count("| 2 | 5 |") == 8  # every 5-epoch row has two seeds


def test_records_that_are_not_an_ablation_json_stop_with_one_line(tmp_path):
    (tmp_path / "bad.json").write_text('[{"row": "direct"}]')
    (tmp_path / "cut.json").write_text('[{"row": ')
    for name in ("bad.json", "cut.json", "missing.json"):
        res = records(tmp_path / name, out=tmp_path / "out")
        assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert name in res.stderr and "ablation.json" in res.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_hybrid_takes_the_best_finished_remap_else_the_default():
    from ablation import hybrid_remap

    runs = lambda *accs: [{"final_acc": a} for a in accs]  # noqa: E731
    assert hybrid_remap({"none": runs(88.0, 88.1), "laplace": runs(85.3), "bins": [], "fc": []}, "add") == "none"
    assert hybrid_remap({"none": runs(89.6), "laplace": runs(90.0), "bins": runs(90.3, 90.4)}, "shift") == "bins"
    # no mult-augmented row finished (e.g. --rows hybrid on a fresh --out): the operator's default, not laplace
    assert hybrid_remap({"none": [], "laplace": [], "bins": [], "fc": []}, "add") == "none"
    assert hybrid_remap({}, "shift") == "bins"


def test_hybrid_remap_flag_names_the_remap_of_a_hybrid_run_alone(tmp_path):
    res = ablation(tmp_path, "--hybrid-remap", "fc", rows=("hybrid",))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| hybrid aug, remap fc |" in (tmp_path / "ablation.md").read_text()  # not the default, bins
    (run,) = (tmp_path / "runs").iterdir()
    assert '"remap": "fc"' in (run / "config.json").read_text()
    # the same run name, another remap: refused, not relabelled
    again = ablation(tmp_path, "--hybrid-remap", "laplace", "--report", rows=("hybrid",))
    assert again.returncode != 0 and "fc" in again.stderr and "laplace" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
