"""The two-stage search: costs without building, constraints, stage 1, supernet training, evolution, the CLI."""
import json
import random

import pytest
import torch
import torch.nn as nn

from shiftaddaug.augment import ElasticNet, Space, max_arch, min_arch, sample_arch
from shiftaddaug.augment.space import crossover, gene, mutate
from shiftaddaug.cli import main
from shiftaddaug.data import load_tensors
from shiftaddaug.hw import count, profile
from shiftaddaug.hw.arch_cost import LatencyTable, arch_cost
from shiftaddaug.models import create_model, list_models
from shiftaddaug.nas import Budget, Evolution, EvolutionSettings, NoFeasibleNetwork, optimise_space, search_space
from shiftaddaug.nas.space import load_space, space_to_dict, with_ops
from shiftaddaug.ops import op_of
from shiftaddaug.train import train_step


@pytest.mark.parametrize("name", list_models())
def test_arch_cost_matches_profile_and_count_of_the_built_model(name):
    rng = random.Random(0)
    for res, bits, hw in ((28, 32, "eyeriss"), (72, 8, "shiftaddnas")):
        space = search_space(name, 0.5, res, 2.2, ("shift", "add", "mult"))
        for arch in (sample_arch(rng, space), min_arch(space)):
            model = create_model("custom", 10, in_chans=1, arch=arch)
            ref, c = profile(model, res, bits, hw, in_chans=1).total, count(model, res, 1)
            fast = arch_cost(arch, 10, 1, bits, hw)
            assert fast.energy_uj * 1e6 == pytest.approx(ref["energy_pj"], rel=1e-9)
            assert fast.latency_ms == pytest.approx(ref["latency_ms"], rel=1e-9)
            assert (fast.macs, fast.params, fast.sram_bytes) == (sum(c.macs.values()), c.params,
                                                                 c.peak_activation_bytes)
            assert dict(fast.macs_by_op) == {k: v for k, v in c.macs.items() if v}


def test_flash_bytes_and_the_constraint_filter_against_hand_computed_costs():
    arch = create_model("mobilenetv2_tiny", 10, op="shift", in_chans=1, input_size=28).arch
    model = create_model("custom", 10, in_chans=1, arch=arch)
    # by hand: shift weights at 5 bits (sign + 4-bit exponent), every other parameter at the 32-bit data width
    bits = 0
    for m in model.modules():
        for pname, p in m.named_parameters(recurse=False):
            bits += p.numel() * (5 if op_of(m) == "shift" and pname == "weight" else 32)
    cost = arch_cost(arch, 10, 1)
    assert cost.flash_bytes == -(-bits // 8)
    assert cost.params == sum(p.numel() for p in model.parameters())
    macs = sum(lc.macs for lc in count(model, 28, 1).layers)
    exact = {"energy_uj": cost.energy_uj, "latency_ms": cost.latency_ms, "params": cost.params,
             "flash_kb": cost.flash_bytes / 1024, "sram_kb": cost.sram_bytes / 1024, "macs_m": macs / 1e6}
    for name, v in exact.items():
        assert Budget({name: v * (1 + 1e-12)}, 10, 1).ok(cost)
        assert not Budget({name: v * (1 - 1e-6)}, 10, 1).ok(cost)
    with pytest.raises(ValueError, match="unknown constraint"):
        Budget({"watts": 1})


def test_latency_table_replaces_the_cost_models_latency(tmp_path):
    arch = create_model("mcunet", 10, op="add", in_chans=1, input_size=28).arch
    model = create_model("custom", 10, in_chans=1, arch=arch)
    rows, seen = [], set()

    def hook(m, inp, out):
        x = inp[0]
        if isinstance(m, nn.Conv2d):
            key = ("conv", op_of(m), m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups,
                   x.shape[2])
        else:
            key = ("linear", op_of(m), m.in_features, m.out_features, 1, 1, 1, 1)
        if key not in seen:
            seen.add(key)
            rows.append(",".join(map(str, key)) + f",{0.001 * (len(rows) + 1)}")
        calls.append(key)

    calls = []
    for m in model.modules():
        if op_of(m):
            m.register_forward_hook(hook)
    model.eval()(torch.zeros(1, 1, 28, 28))
    lookup = {tuple(r.split(",")[:2]) + tuple(int(v) for v in r.split(",")[2:8]): float(r.split(",")[8])
              for r in rows}
    csv = tmp_path / "lat.csv"
    csv.write_text("layer,op,in_ch,out_ch,kernel,stride,groups,in_size,latency_ms\n" + "\n".join(rows) + "\n")
    table = LatencyTable.load(csv)
    assert arch_cost(arch, 10, 1, table=table).latency_ms == pytest.approx(sum(lookup[k] for k in calls))
    csv.write_text("layer,op,in_ch,out_ch,kernel,stride,groups,in_size,latency_ms\n" + "\n".join(rows[1:]) + "\n")
    with pytest.raises(ValueError, match="has no row for conv,mult,1,"):
        arch_cost(arch, 10, 1, table=LatencyTable.load(csv))
    csv.write_text("layer,op,latency_ms\nconv,add,1\n")
    with pytest.raises(ValueError, match="lacks the column"):
        LatencyTable.load(csv)


def test_stage_one_chooses_the_space_with_the_most_macs_among_those_that_fit():
    limit = arch_cost(create_model("mobilenetv2_tiny", 10, op="shift", in_chans=1, input_size=28).arch, 10,
                      1).energy_uj
    budget = Budget({"energy_uj": limit}, 10, 1)
    stats, chosen = optimise_space("mobilenetv2_tiny", budget, (0.25, 0.5), (28,), (2.2, 3.2), ("shift",),
                                   samples=40, show_progress=False, min_fraction=0.05)
    assert len(stats) == 4 and all(s.samples == 40 for s in stats)
    qualified = [s for s in stats if s.fraction >= 0.05]
    assert chosen.mean_macs == max(s.mean_macs for s in qualified)
    space = search_space("mobilenetv2_tiny", chosen.width, 28, chosen.multiple, ("shift",))
    rng = random.Random(f"0/{chosen.width}/28/{chosen.multiple}")  # the same draws: the same satisfying MACs
    macs = sorted(c.macs for c in (budget.cost(sample_arch(rng, space)) for _ in range(40)) if budget.ok(c))
    assert macs == chosen.macs
    with pytest.raises(NoFeasibleNetwork, match="smallest found: energy"):
        optimise_space("mobilenetv2_tiny", Budget({"energy_uj": 1e-3}, 10, 1), (0.25,), (28,), (2.2,),
                       samples=5, show_progress=False)


def test_search_space_shape_and_json_round_trip(tmp_path):
    space = search_space("mcunet", 0.5, 28, 2.8, ("shift", "add"))
    assert space.width_scale == (1.0, 1.9, 2.8) and space.kernel == (3, 5, 7) and space.expand == (3, 4, 6)
    assert [len(st["blocks"]) for st in space.base["stages"]] == [1, 4, 4, 4, 4, 4, 1]
    assert [space.depths(i) for i in range(7)] == [(1,), *[(2, 3, 4)] * 5, (1,)]
    small = min_arch(space)
    assert all(b["op"] == "shift" and b["kernel"] == 3 for st in small["stages"][1:-1] for b in st["blocks"])
    f = tmp_path / "space.json"
    f.write_text(json.dumps({"space": space_to_dict(space)}))
    assert load_space(f) == space
    assert with_ops(space, ("add", "mult")).ops == ("add", "mult")
    f.write_text(json.dumps({"space": {**space_to_dict(space), "ops": ["shift", "mul"]}}))
    with pytest.raises(ValueError, match="unknown operator 'mul'"):
        load_space(f)


def test_sandwich_step_trains_largest_smallest_and_random_subnetworks():
    space = search_space("mobilenetv2_tiny", 0.25, 28, 2.2, ("shift", "add"))
    net = ElasticNet(space, 10, in_chans=1, aug_op="hybrid")
    calls = []
    real = net.set_active

    def spy(arch="min", width=True, augment=None):
        real(arch, width, augment)
        calls.append((arch if isinstance(arch, str) else "arch", any(c.augmenting for c in net.elastic_convs())))

    net.set_active = spy
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    train_step(net, x, y, opt, nn.CrossEntropyLoss(), augmented=True, sandwich=2)
    assert calls == [("max", True), ("min", False), ("random", False), ("random", False), ("min", False)]
    moved = [n for n, p in net.named_parameters() if not torch.equal(p, before[n])]
    assert any("stages.1.blocks.3" in n for n in moved)  # a block only the largest network runs learned


def test_mutation_crossover_and_rejection():
    space = search_space("mcunet", 0.5, 28, 2.2, ("shift", "add"))
    rng = random.Random(0)
    a, b = sample_arch(rng, space), sample_arch(rng, space)
    assert mutate(rng, space, a, 0.0) == a
    paths = [("stages", 2, "blocks", 1, "kernel"), ("stages", 3, "depth"), ("stages", 4, "width"),
             ("stages", 1, "blocks", 0, "op")]
    for path in paths:  # probability 1 redraws every dimension uniformly: every choice turns up
        assert len({gene(space, mutate(rng, space, a, 1.0), path) for _ in range(60)}) > 1
    for _ in range(20):
        c = crossover(rng, space, a, b)
        for path in paths:
            assert gene(space, c, path) in (gene(space, a, path), gene(space, b, path))
    budget = Budget({"macs_m": 10.0}, 10, 1)
    evo = Evolution(space, budget, lambda arch: 0.0, EvolutionSettings(population=6, generations=1),
                    show_progress=False)
    evo.run()
    assert len(evo.evaluated) >= 6 and all(r["macs"] <= 10e6 for r in evo.evaluated.values())
    with pytest.raises(NoFeasibleNetwork, match="smallest found: MACs"):
        Evolution(space, Budget({"macs_m": 0.01}, 10, 1), lambda arch: 0.0,
                  EvolutionSettings(population=2, generations=0), show_progress=False).run()


def _kernel_space():
    """A toy space: only kernels are elastic; the fitness below counts the 5x5 kernels (optimum: all of them)."""
    base = create_model("mobilenetv2_tiny", 10, op="shift", in_chans=1, input_size=28).arch
    return Space(base, kernel=(3, 5, 7))


def _fives(arch):
    return sum(b["kernel"] == 5 for st in arch["stages"] for b in st["blocks"] if b["expand"] is not None)


def test_evolution_finds_a_known_optimum_and_resumes_where_it_stopped(tmp_path):
    space = _kernel_space()
    optimum = sum(len(st["blocks"]) for st in space.base["stages"][1:])
    settings = EvolutionSettings(population=30, generations=20, seed=1)  # seeds 0-5 all reach the optimum
    evo = Evolution(space, Budget({}, 10, 1), _fives, settings, tmp_path / "a.json", show_progress=False)
    assert _fives(evo.run()["arch"]) == optimum
    front = evo.front()
    assert [r["energy_uj"] for r in front] == sorted(r["energy_uj"] for r in front)
    assert all(x["val_acc"] < y["val_acc"] for x, y in zip(front, front[1:]))

    def interrupted(arch):  # the same search, cut in the middle of generation 2
        if len(half.evaluated) == 75:
            raise KeyboardInterrupt
        return _fives(arch)

    half = Evolution(space, Budget({}, 10, 1), interrupted, settings, tmp_path / "b.json", show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        half.run()
    again = Evolution(space, Budget({}, 10, 1), _fives, settings, tmp_path / "b.json", show_progress=False)
    assert again.resume()
    again.run()
    assert again.evaluated.keys() == evo.evaluated.keys() and again.population == evo.population
    other = Evolution(space, Budget({}, 10, 1), _fives, EvolutionSettings(population=30), tmp_path / "b.json")
    with pytest.raises(ValueError, match="other settings"):
        other.resume()


def test_validation_images_are_held_out_of_training():
    x, _ = load_tensors("synthetic", None, "train", val_images=100)
    xv, _ = load_tensors("synthetic", None, "val", val_images=100)
    full, _ = load_tensors("synthetic", None, "train")
    assert len(xv) == 100 and len(x) + len(xv) == len(full)
    flat = {bytes(t.flatten().tolist()) for t in x}
    assert not any(bytes(t.flatten().tolist()) in flat for t in xv)
    sub, _ = load_tensors("synthetic", None, "train", subset=50, seed=3, val_images=100)
    assert not any(bytes(t.flatten().tolist()) in {bytes(v.flatten().tolist()) for v in xv} for t in sub)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Stage 1, supernet training and a short evolution through the CLI, at toy scale on synthetic data."""
    d = tmp_path_factory.mktemp("search")
    assert main(["search", "space", "--model", "mobilenetv2_tiny", "--op", "shift,add", "--widths", "0.25",
                 "--resolutions", "28", "--multiples", "2.2,2.4", "--samples", "30", "--num-classes", "10",
                 "--energy-uj", "2000", "--workers", "1", "--out", str(d / "s1")]) == 0
    common = ["dataset=synthetic", "train_subset=64", "test_subset=32", "val_images=64", "batch_size=32",
              "bn_calibration_images=32", "workers=0", "sandwich=1", f"out_dir={d / 'runs'}", "name=sn"]
    assert main(["search", "train", str(d / "s1" / "space.json"), "epochs=1", *common]) == 0
    assert main(["search", "evolve", str(d / "runs" / "sn"), "--energy-uj", "2000", "--population", "4",
                 "--generations", "1", "--calib-images", "32"]) == 0
    return d, common


def test_search_cli_end_to_end(searched, capsys):
    d, common = searched
    for f in ("space.json", "report.md", "spaces.json", "macs_cdf.png"):
        assert (d / "s1" / f).stat().st_size > 0
    report = (d / "s1" / "report.md").read_text()
    assert "**chosen**" in report and report.count("| 0.25 | 28 |") == 2
    run = d / "runs" / "sn"
    metrics = (run / "metrics.csv").read_text()
    assert "val_acc" in metrics.splitlines()[0] and "test_acc" not in metrics.splitlines()[0]
    assert json.loads((run / "summary.json").read_text())["eval_split"] == "val"
    # resumable: one more epoch continues the run
    assert main(["search", "train", str(d / "s1" / "space.json"), "epochs=2", *common, "--resume"]) == 0
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    out = run / "evolve"
    for f in ("best_arch.json", "pareto.md", "pareto.csv", "pareto.png", "search.json", "evolve_state.json"):
        assert (out / f).stat().st_size > 0
    best = json.loads((out / "best_arch.json").read_text())
    assert arch_cost(best, 10, 3).energy_uj <= 2000
    # the found architecture trains with ShiftAddAug and exports like a zoo model
    arch = d / "best.json"
    arch.write_text(json.dumps(best))
    assert main(["train", f"arch={arch}", "aug_op=mult", "epochs=1", "dataset=synthetic", "train_subset=32",
                 "test_subset=16", "batch_size=16", "workers=0", f"out_dir={d / 'runs'}", "name=found"]) == 0
    assert (d / "runs" / "found" / "exported.pt").exists()
    capsys.readouterr()
    assert main(["search", "evolve", str(d / "runs" / "found"), "--energy-uj", "5"]) == 2
    assert "not a search supernet" in capsys.readouterr().err
    # a second evolve into the same folder needs --resume; with it, more generations continue
    capsys.readouterr()
    assert main(["search", "evolve", str(run), "--energy-uj", "2000", "--population", "4", "--generations", "1",
                 "--calib-images", "32"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["search", "evolve", str(run), "--energy-uj", "2000", "--population", "4", "--generations", "2",
                 "--calib-images", "32", "--resume"]) == 0
    assert json.loads((out / "evolve_state.json").read_text())["generation"] == 2


@pytest.mark.parametrize("argv, message", [
    (["search", "space", "--model", "mobilenetv2_tiny", "--widths", "0.25", "--resolutions", "28", "--multiples",
      "2.2", "--samples", "5", "--energy-uj", "0.001", "--workers", "1"], "no sub-network of the 1 spaces satisfies"),
    (["search", "space", "--model", "mobilenetv2_tiny", "--op", "shift,mul", "--energy-uj", "5"],
     "unknown operator 'mul'"),
    (["search", "space", "--model", "mobilenetv2_tiny"], "give at least one constraint"),
    (["search", "space", "--model", "nope", "--energy-uj", "5"], "unknown model 'nope'"),
    (["search", "space", "--model", "mcunet", "--energy-uj", "-3"], "must be a positive number"),
    (["search", "space", "--model", "mcunet", "--energy-uj", "5", "--latency-table", "/no/such.csv"],
     "cannot read latency table"),
    (["search", "train", "/no/space.json", "dataset=synthetic"], "cannot read search space"),
])
def test_search_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, if any
    assert last.startswith("shiftaddaug: error: ") and message in last


def test_search_evolve_refuses_impossible_constraints(searched, capsys):
    d, _ = searched
    run = d / "runs" / "sn"
    assert main(["search", "evolve", str(run), "--energy-uj", "0.001", "--population", "2", "--generations", "0",
                 "--out", str(d / "e2")]) == 2
    err = capsys.readouterr().err
    assert "no sub-network of this supernet satisfies energy <= 0.001 uJ" in err and "smallest found" in err


def test_search_config_keys_are_checked():
    from shiftaddaug.config import load_config
    from shiftaddaug.errors import UserError

    with pytest.raises(UserError, match="give search_space"):
        load_config(None, ["sandwich=3"])
    with pytest.raises(UserError, match="aug_op must be hybrid"):
        load_config(None, ["search_space=s.json", "aug_op=none"])
    with pytest.raises(UserError, match="drop op"):
        load_config(None, ["search_space=s.json", "op=shift"])
    cfg = load_config(None, ["search_space=out/s1/space.json"])
    assert cfg.aug_op == "hybrid" and cfg.name.startswith("search_s1_")


def test_largest_network_is_the_wide_model_and_max_arch_is_stored():
    space = search_space("mobilenetv2_tiny", 0.25, 28, 2.2, ("shift", "add"))
    top = max_arch(space)
    assert top["stem"]["width"] == pytest.approx(0.25 * 2.2)
    assert all(b["kernel"] == 7 and b["expand"] == 6 for st in top["stages"][1:-1] for b in st["blocks"])
