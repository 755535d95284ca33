"""The Eyeriss-like cost model: hand-computed single layers, totals, and MF models cheaper than mult ones."""
import json

import pytest
import torch.nn as nn

from shiftaddaug.cli import main
from shiftaddaug.hw import CONSTANTS, count, profile
from shiftaddaug.hw.eyeriss import factorizations
from shiftaddaug.models import DEFAULT_RES, create_model, list_models
from shiftaddaug.ops import AdderConv2d

# a 1x1 conv, 2 -> 4 channels, on a 2x2 map, one image, 32-bit words (2 words of 16 bit each)
C, M, HW = 2, 4, 2
IFMAP, WEIGHTS, OFMAP = C * HW * HW, M * C, M * HW * HW
MACS = M * C * HW * HW
RF, RFW, NOC, NOC_PSUM, GB, DRAM = 3.7, 7.4, 7.4, 3.7, 22.2, 200.0


def _memory_pj(op_on_chip=False):
    # DRAM-bound (32 words x 32 bit / 64 bit per cycle = 16 cycles >= any compute schedule), so the search
    # takes the energy-optimal tiling: no re-reads (M3=M2=E3=C2=1), no multicast (M1=C1=1), E1=2 rows on the array
    dram = (IFMAP + WEIGHTS + OFMAP) * 2 * DRAM
    gb = (2 * IFMAP + 2 * OFMAP) * 2 * GB  # ifmap written + read once, psum written + read once
    noc = (IFMAP + 2 * WEIGHTS) * 2 * NOC + OFMAP * 2 * NOC_PSUM  # weights go to E1=2 PEs
    rf = MACS * 2 * RF + MACS * 2 * RFW + 2 * MACS * 2 * RF
    return dram + gb + noc + rf


def test_single_conv_layer_by_hand():
    p = profile(nn.Conv2d(C, M, 1, bias=False), HW, in_chans=C)
    (layer,) = p.layers
    assert layer.macs == MACS and layer.count("mult") == MACS and layer.count("add") == MACS
    assert layer.tiling["M0"] == M and layer.tiling["C0"] == C and layer.tiling["E1"] == 2
    assert layer.accesses["dram"] == IFMAP + WEIGHTS + OFMAP
    assert layer.energy_pj == pytest.approx(MACS * (3.7 + 0.9) + _memory_pj())
    assert layer.latency_cycles == pytest.approx((IFMAP + WEIGHTS + OFMAP) * 32 / 64)


def test_single_adder_layer_by_hand():
    layer = profile(AdderConv2d(C, M, 1, bias=False), HW, in_chans=C).layers[0]
    assert layer.op == "add" and layer.count("add") == 2 * MACS and layer.count("mult") == 0
    assert layer.energy_pj == pytest.approx(MACS * 2 * 0.9 + _memory_pj())
    # ShiftAddNAS's simplification: an adder layer's DRAM, buffer and ifmap/weight NoC traffic is free, a MAC is
    # one add, and cycles are compute only. All 4 filters x 2 channels x 2 rows on the array (M1=4, C1=2, E1=2)
    # leave each PE F=2 MACs: 2 cycles, for psums passing C1*R = 2 PEs (the NoC psum term doubles)
    nas = profile(AdderConv2d(C, M, 1, bias=False), HW, in_chans=C, hw="shiftaddnas").layers[0]
    rf = MACS * 2 * RF + MACS * 2 * RFW + 2 * MACS * 2 * RF
    assert nas.energy_pj == pytest.approx(MACS * 0.9 + 2 * OFMAP * 2 * NOC_PSUM + rf)
    assert nas.latency_cycles == 2


def test_totals_are_sums_and_vector_work_is_counted():
    p = profile(create_model("resnet20", 10, op="shift", input_size=32), 32)
    t = p.total
    assert t["energy_pj"] == pytest.approx(sum(lc.energy_pj for lc in p.layers))
    assert t["latency_cycles"] == pytest.approx(sum(lc.latency_cycles for lc in p.layers))
    assert t["energy_pj"] == pytest.approx(sum(t["energy_by_level"].values()))
    assert t["energy_pj"] == pytest.approx(sum(t["energy_by_class"].values()))
    for op in ("mult", "add", "shift"):
        assert t[op] == sum(lc.count(op) for lc in p.layers)
    assert t["macs_by_op"] == {k: v for k, v in count(create_model("resnet20", 10, op="shift"), 32).macs.items()
                               if v} | {"add": 0}
    types = [lc.type for lc in p.layers]
    assert types.count("add") == 9 and types.count("bn") == 19 + 2  # 9 residual adds; BN after every conv
    # BN after a shift conv keeps its multiply at 32 bit; it folds into the requantisation at 8 bit
    bn = [lc for lc in p.layers if lc.type == "bn" and lc.name.startswith("stages")][0]
    assert bn.count("mult") > 0
    p8 = profile(create_model("resnet20", 10, op="shift", input_size=32), 32, bits=8)
    assert all(lc.count("mult") == 0 for lc in p8.layers if lc.type == "bn")
    conv8 = [lc for lc in p8.layers if lc.op == "shift"][0]
    assert conv8.count("shift") == conv8.macs + conv8.out_shape[0] * conv8.out_shape[1] * conv8.out_shape[2]


@pytest.mark.parametrize("name", list_models())
def test_mf_models_cost_less_energy_than_mult(name):
    res = 32 if name == "resnet20" else DEFAULT_RES[name]
    energy = {op: profile(create_model(name, 10, op=op, input_size=res), res).total["energy_pj"]
              for op in ("mult", "shift", "add")}
    assert energy["shift"] < energy["mult"] and energy["add"] < energy["mult"]


def test_bits_lower_energy_and_bad_arguments():
    model = create_model("resnet20", 10, input_size=32)
    e = [profile(model, 32, bits=b).total["energy_pj"] for b in (32, 16, 8)]
    assert e[0] > e[1] > e[2]
    with pytest.raises(ValueError, match="bits"):
        profile(model, 32, bits=4)
    with pytest.raises(ValueError, match="unknown hardware"):
        profile(model, 32, hw="tpu")
    with pytest.raises(ValueError, match="does not know"):
        profile(nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU()), 8)


def test_factorizations_and_constants_have_sources():
    f = factorizations(12, 3)
    assert (f.prod(1) == 12).all() and len({tuple(r) for r in f}) == len(f) == 18
    assert all(c.source for c in CONSTANTS.values())


def test_profile_cli(capsys):
    assert main(["profile", "resnet20", "--op", "shift", "--num-classes", "10", "--hw", "eyeriss",
                 "--bits", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hw"]["bits"] == 8 and out["hw"]["total"]["energy_pj"] > 0
    assert main(["profile", "resnet20", "--num-classes", "10", "--hw", "eyeriss"]) == 0
    text = capsys.readouterr().out
    assert "energy" in text and "blocks.0.conv1.conv" in text


def test_plot_zoo_and_bad_arguments(tmp_path, capsys):
    assert main(["plot", "--zoo", "--input-size", "32", "-o", str(tmp_path / "z.png")]) == 0
    assert (tmp_path / "z.png").stat().st_size > 10_000
    assert main(["plot"]) == 2 and "give either" in capsys.readouterr().err
