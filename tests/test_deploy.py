"""Integer deployment: the node graph, fixed-point formats, the audited NumPy reference engine, the generated C."""
import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import shiftaddaug.deploy
from shiftaddaug.cli import main as cli
from shiftaddaug.deploy import emit_c, load_bundle, quantize, run, run_float, save_bundle, targets, trace
from shiftaddaug.deploy.engine import audited, input_integers, per_channel, round_even, round_shift, run_node
from shiftaddaug.deploy.quantize import ADD_WEIGHT_GUARD, frac_bits, least_error, pow2_terms
from shiftaddaug.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_the_node_graph_reproduces_the_models_logits(name):
    model = create_model(name, 10, op="shift", in_chans=1, input_size=28).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(run_float(trace(model), x)[-1].flatten(1), model(x))


def test_layers_without_an_integer_form_are_named():
    model = create_model("mobilenetv2_tiny", 10, op="shift", in_chans=1, input_size=28)
    model.stages[1].blocks[0].expand.act = torch.nn.SiLU()
    with pytest.raises(ValueError, match="stages.1.blocks.0.expand uses SiLU"):
        trace(model)


def test_formats_and_scales_by_hand():
    assert frac_bits(1.0, 8) == 6 and frac_bits(0.99, 8) == 7 and frac_bits(200.0, 16) == 7  # 127/1 -> 2**6 ...
    exps, signs = pow2_terms(np.array([0.75, -3.0, 0.0]), 2)
    assert exps[:, 0].tolist() == [0, -2] and signs[:, 0].tolist() == [1, -1]  # 0.75 = 1 - 1/4
    assert (signs[:, 1] * np.exp2(exps[:, 1])).sum() == -3.0 and signs[:, 2].tolist() == [0, 0]
    x = audited(np.array([5, -5, 3, 6]))
    assert np.asarray(round_shift(x, -1)).tolist() == [3, -2, 2, 3]  # halves round up
    assert np.asarray(round_shift(x, 2)).tolist() == [20, -20, 12, 24]


def test_calibration_clips_a_rare_outlier_only_where_that_lowers_the_error():
    torch.manual_seed(0)
    bulk = (torch.rand(4, 2, 32, 32) * 2 - 1) * 0.2  # uniform: the format holding its largest value is the best
    fb = frac_bits(bulk.abs().max().item(), 8)
    assert least_error(bulk, np.asarray(fb), 8) == fb
    outlier = bulk.clone()
    outlier[0, 1, 0, 0] = 0.3  # one value 1.5x the rest: the next finer format clips it, and halves every step
    f = frac_bits(0.3, 8)
    assert f == fb - 1 and least_error(outlier, np.asarray(f), 8) == f + 1
    assert least_error(outlier, np.array([f, f]), 8).tolist() == [fb, f + 1]  # per channel: each its own choice


def test_an_outputs_rounding_is_half_to_even_like_torch_and_unbiased():
    x = np.arange(-64, 65)
    for e in (-1, -2, -3):  # every residue, ties included, matches torch.round (half to even)
        expect = torch.round(torch.tensor(x, dtype=torch.float64) * 2.0**e).long().tolist()
        assert np.asarray(round_even(audited(x), e)).tolist() == expect
    ties = audited(np.arange(-63, 64, 2))  # all ties one bit below the output: half up would gain 1/4 step
    assert np.asarray(round_even(ties, -1)).sum() == 0 and np.asarray(round_shift(ties, -1)).sum() == 32
    mixed = np.asarray(round_even(audited(np.full((1, 3, 1, 1), 6)), per_channel([-2, 0, 1])))  # per channel
    assert mixed.reshape(-1).tolist() == [2, 6, 12]


def test_the_audit_refuses_a_multiply_outside_multiplicative_layers():
    x = audited(np.array([1, 2, 3]))
    with pytest.raises(AssertionError, match="multiply"):
        x * 3
    with pytest.raises(AssertionError, match="dot"):
        np.dot(x, x)


@pytest.fixture(scope="module")
def calibrated():
    """mobilenetv2_tiny models whose BatchNorm statistics come from data (not their initial 0 / 1)."""
    torch.manual_seed(0)
    x = torch.randn(40, 1, 28, 28)
    models = {}
    for op in ("shift", "add"):
        m = create_model("mobilenetv2_tiny", 10, op=op, in_chans=1, input_size=28).train()
        with torch.no_grad():
            for _ in range(3):
                m(x[:32])
        models[op] = m.eval()
    return models, x


@pytest.mark.parametrize("op", ["shift", "add"])
@pytest.mark.parametrize("bits", [8, 16])
def test_the_engine_follows_the_float_model_without_a_multiply_in_mf_layers(calibrated, op, bits):
    models, x = calibrated
    model = models[op]
    bundle = quantize(model, x[:32], act_bits=bits)
    counts = {}
    q = run(bundle, x[32:].numpy(), counts)
    ref = model(x[32:]).detach().numpy()
    assert (q.argmax(1) == ref.argmax(1)).all()
    err = np.abs(q * 2.0 ** -bundle.nodes[-1].frac_out - ref).max()
    assert err < 0.1 * np.abs(ref).max()
    mult_nodes = {n for n, c in counts.items() if c.get("mult")}
    assert mult_nodes == {"stem", "classifier"}  # the multiplicative edges, and nothing else
    mf = [n.name for n in bundle.nodes if n.op == op]
    assert mf and all(counts[n].get("add", 0) + counts[n].get("sub", 0) > 0 for n in mf)
    assert all(counts[n].get("shift", 0) > 0 for n in mf) if op == "shift" else \
        all(counts[n].get("abs", 0) > 0 for n in mf)


def test_formats_per_channel_only_where_every_reader_takes_them(calibrated):
    models, x = calibrated
    for op in ("shift", "add"):
        bundle = quantize(models[op], x[:32], act_bits=8)
        fmt = {q.output: q.frac_out for q in bundle.nodes}
        wide = {t for t, f in fmt.items() if isinstance(f, tuple)}
        assert wide and not isinstance(bundle.nodes[-1].frac_out, tuple)
        for q in bundle.nodes:
            if not any(i in wide for i in q.inputs):
                continue
            assert q.kind in ("add", "pool") or q.op == "shift" or (q.op == "add" and q.geometry["groups"] > 1
                                                                     and q.weight.shape[1] == 1)
        if op == "add":  # a pointwise adder reads one format per tensor
            assert all(i not in wide for q in bundle.nodes if q.op == "add" and q.geometry["groups"] == 1
                       for i in q.inputs)
        flat = quantize(models[op], x[:32], act_bits=8, per_channel=False)
        assert not any(isinstance(q.frac_out, tuple) for q in flat.nodes)
        # finer grids where a channel is small: the integer logits follow the float model at least as closely
        ref = models[op](x[32:]).detach().numpy()
        err = [np.abs(run(b, x[32:].numpy()) * 2.0 ** -b.nodes[-1].frac_out - ref).mean() for b in (bundle, flat)]
        assert err[0] <= err[1] * 1.05, err


def with_batch_statistics(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """``model`` in eval mode, its BatchNorm statistics exactly those of ``x`` (as after training, not at init)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def local_errors(model, bundle, x: torch.Tensor) -> dict[str, float]:
    """Per node: its integer form run on its float inputs (put on their grids), against its float output; the
    largest difference relative to the largest float value. (A random network amplifies any error from node to
    node, so whole-model agreement is measured on trained models, in benchmarks/deploy.py.)"""
    tensors = run_float(trace(model), x)
    frac = {0: bundle.frac_in, **{q.output: q.frac_out for q in bundle.nodes}}
    scale = {t: 2.0 ** (per_channel(f) if tensors[t].dim() == 4 else np.asarray(f)) for t, f in frac.items()}
    lim = 2 ** (bundle.act_bits - 1)
    errors = {}
    for q in bundle.nodes:
        ins = [audited(np.clip(np.round(tensors[i].numpy() * scale[i]), -lim, lim - 1)) for i in q.inputs]
        ref = tensors[q.output].numpy()
        y = np.asarray(run_node(q, ins)).reshape(ref.shape) / scale[q.output]
        errors[q.name] = float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-6))
    return errors


@pytest.mark.parametrize("name,op", [("mobilenetv2_tiny", "shift"), ("resnet20", "add"),
                                     ("mobilenetv3_w035", "add")])
def test_every_node_follows_its_float_form_at_16_bits(name, op):
    torch.manual_seed(0)
    x = torch.randn(8, 1, 28, 28)
    model = with_batch_statistics(create_model(name, 10, op=op, in_chans=1, input_size=28), x)
    bundle = quantize(model, x, act_bits=16, calibration="max")  # no clipping: errors are arithmetic
    errors = local_errors(model, bundle, x)
    # 8-bit weights in the stem and classifier, four-term scales (<= 0.7 %); the adders' accumulators sit far
    # from zero, so their BatchNorm mean must cancel before the inexact scale (it did not: 28 %)
    assert max(errors.values()) < 0.01, sorted(errors.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_h_swish_and_squeeze_excite_run_as_listed_multiplies_in_the_engine_and_the_c(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(8, 1, 28, 28)
    model = create_model("mobilenetv3_w035", 10, op="add", in_chans=1, input_size=28, mf_stem_head=True)
    bundle = quantize(with_batch_statistics(model, x), x, act_bits=8, calibration="max")
    errors = local_errors(model, bundle, x[:4])
    kinds = {n.name: n.kind for n in bundle.nodes}
    assert max(e for n, e in errors.items() if kinds[n] in ("hswish", "gate")) < 0.05  # 8-bit grids
    counts = {}
    q = run(bundle, x[:2].numpy(), counts)
    multiplying = {kinds[n] for n, c in counts.items() if c.get("mult")}
    assert multiplying == {"hswish", "gate", "pool"}  # with an MF stem and classifier, nothing else; 7x7 pools
    h = next(n for n in bundle.nodes if n.kind == "hswish")
    assert counts[h.name]["mult"] == 2 * int(np.prod(h.shape))  # two per element: the clamp and the 1/6
    assert np.array_equal(compile_and_run(emit_c(bundle), input_integers(bundle, x[:2].numpy()), tmp_path), q)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
@pytest.mark.parametrize("head,op,stride", [("lraspp", "shift", None), ("aspp", "add", 8)])
def test_segmentation_heads_run_in_integers_with_listed_multiplies(head, op, stride, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(6, 1, 32, 32)
    extra = {"output_stride": stride} if stride else {}
    model = create_model("mobilenetv2_tiny", 11, op=op, in_chans=1, input_size=32, task="seg", head=head, **extra)
    assert torch.equal(run_float(trace(model.eval()), x)[-1], model(x))
    bundle = quantize(with_batch_statistics(model, x), x, act_bits=16, calibration="max")
    errors = local_errors(model, bundle, x)
    assert max(errors.values()) < 0.02, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    counts = {}
    q = run(bundle, x[:1].numpy(), counts)
    assert q.shape == (1, 11, 32, 32) and bundle.shape_out == (11, 32, 32)
    kinds = {n.name: n.kind for n in bundle.nodes}
    resize = [n for n in bundle.nodes if n.kind == "resize"]
    assert resize[-1].name == "resize" and all(counts[n.name]["mult"] == 6 * int(np.prod(n.shape)) for n in resize)
    mf = [n.name for n in bundle.nodes if n.op == op]
    assert mf and not any(counts[n].get("mult") for n in mf)  # the head's own layers run the operator too
    assert {kinds[n] for n, c in counts.items() if c.get("mult")} <= {"conv", "resize", "gate", "pool"}
    targets.write_sources(emit_c(bundle), tmp_path)
    native = targets.NativeModel(tmp_path, 16, int(np.prod(bundle.shape_out)))
    assert np.array_equal(native(input_integers(bundle, x[:1].numpy())).reshape(q.shape), q)


def compile_and_run(emitted, inputs: np.ndarray, tmp_path) -> np.ndarray:
    """Build the generated C with its harness (gcc -std=c99 -O2 -Wall -Wextra -Werror) and run it on ``inputs``."""
    (tmp_path / "model.h").write_text(emitted.header)
    (tmp_path / "model.c").write_text(emitted.source)
    harness = Path(shiftaddaug.deploy.__file__).parent / "c" / "harness.c"
    exe = tmp_path / "model"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path), "-o", str(exe),
                    str(tmp_path / "model.c"), str(harness)], check=True, capture_output=True, text=True)
    feed = f"{len(inputs)}\n" + "\n".join(" ".join(map(str, x.reshape(-1).tolist())) for x in inputs) + "\n"
    out = subprocess.run([str(exe)], input=feed, check=True, capture_output=True, text=True).stdout
    return np.array([[int(v) for v in line.split()] for line in out.splitlines()])


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
@pytest.mark.parametrize("op,bits", [("shift", 8), ("add", 16)])  # the other two pairs: the RV32I and h-swish tests
def test_the_generated_c_is_bit_identical_to_the_engine(calibrated, op, bits, tmp_path):
    models, x = calibrated
    bundle = quantize(models[op], x[:32], act_bits=bits)
    emitted = emit_c(bundle)
    assert "malloc" not in emitted.source and "float" not in emitted.source and "double" not in emitted.source
    images = x[32:36].numpy()
    c_out = compile_and_run(emitted, input_integers(bundle, images), tmp_path)
    assert np.array_equal(c_out, run(bundle, images))
    native = targets.NativeModel(tmp_path, bits, bundle.num_classes)  # the same source as a library, via ctypes
    assert np.array_equal(native(input_integers(bundle, images)), c_out)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_an_exact_pixel_input_folds_the_normalisation_into_the_stem(calibrated, tmp_path):
    models, _ = calibrated
    mean, std = (0.2860,), (0.3530,)  # Fashion-MNIST's
    torch.manual_seed(1)
    pixels = torch.randint(0, 256, (40, 1, 28, 28)).double()
    x = ((pixels / 255 - mean[0]) / std[0]).float()  # what the model sees
    model = with_batch_statistics(copy.deepcopy(models["shift"]), x)  # the fixture's model stays as it is
    bundle = quantize(model, x[:32], act_bits=8, pixels=(mean, std))
    assert bundle.frac_in == 0 and bundle.nodes[0].geometry["pad_value"] == (round(255 * mean[0] - 128),)
    assert np.array_equal(input_integers(bundle, x[32:].numpy()), pixels[32:].numpy() - 128)  # exact, no grid
    ref = model(x[32:]).detach().numpy()
    err = []  # at 16 bits (a random network's 8-bit logits are mostly rounding): no worse than the normalised input
    for b in (quantize(model, x[:32], 16, pixels=(mean, std)), quantize(model, x[:32], 16)):
        err.append(np.abs(run(b, x[32:].numpy()) * 2.0 ** -b.nodes[-1].frac_out - ref).mean())
    assert err[0] <= err[1] * 1.1, err
    emitted = emit_c(bundle)
    assert "MODEL_INPUT_OFFSET 128" in emitted.header
    images = x[32:36].numpy()
    assert np.array_equal(compile_and_run(emitted, input_integers(bundle, images), tmp_path), run(bundle, images))
    save_bundle(bundle, tmp_path / "b.npz")
    assert np.array_equal(run(load_bundle(tmp_path / "b.npz"), images), run(bundle, images))


def test_a_saved_bundle_loads_as_the_same_integers_and_a_broken_file_is_named(calibrated, tmp_path):
    models, x = calibrated
    bundle = quantize(models["add"], x[:32], act_bits=16)
    save_bundle(bundle, tmp_path / "b.npz")
    loaded = load_bundle(tmp_path / "b.npz")
    assert emit_c(loaded).source == emit_c(bundle).source  # every weight, scale, offset, bias and format
    assert np.array_equal(run(loaded, x[32:34].numpy()), run(bundle, x[32:34].numpy()))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "b.npz").read_bytes()[:500])
    with pytest.raises(ValueError, match="cut.npz is no readable shiftaddaug bundle") as e:
        load_bundle(tmp_path / "cut.npz")
    assert "\n" not in str(e.value)


def test_deploy_writes_c_and_a_report_and_refuses_a_used_folder(tmp_path, capsys):
    common = ["dataset=synthetic", "model=resnet20", "op=shift", "epochs=1", "batch_size=32", "train_subset=64",
              "test_subset=16", "workers=0", "threads=1", f"out_dir={tmp_path}"]
    assert cli(["train", *common, "name=run"]) == 0
    out = tmp_path / "c"
    assert cli(["deploy", str(tmp_path / "run" / "last.pt"), "--out", str(out), "--check", "8",
                "--calib-images", "32"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bundle.npz", "harness.c", "model.c", "model.h", "report.json"]
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["multiplies"]) == {"stem", "classifier"}  # 32 px: an 8x8 pool is a shift
    assert rep["weight_bytes"] < rep["float32_weight_bytes"] / 3 and rep["arena_bytes"] > 0
    assert rep["check"]["images"] == 8 and rep["ops_per_image"]["shift"] > 0
    capsys.readouterr()
    assert cli(["deploy", str(tmp_path / "run" / "last.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err


RV_TOOLS = ("riscv64-unknown-elf-gcc", "riscv64-unknown-elf-objdump", "qemu-system-riscv32")


@pytest.mark.skipif(bool(targets.missing(*RV_TOOLS)), reason="RV32I toolchain or QEMU missing (make toolchains: "
                    "gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf, qemu-system-misc)")
@pytest.mark.parametrize("op", ["shift", "add"])
def test_on_rv32i_the_mf_layers_call_no_multiply_and_qemu_prints_the_engines_outputs(calibrated, op, tmp_path):
    models, x = calibrated
    bundle = quantize(models[op], x[:32], act_bits=8)
    images = x[32:34].numpy()
    targets.write_sources(emit_c(bundle), tmp_path, input_integers(bundle, images))
    elf = targets.build_rv32i(tmp_path)
    calls = targets.helper_calls(elf)
    assert {f"conv_{op}", f"pw_{op}", "requant"} <= set(calls)  # the layer functions are there, not inlined away
    assert {f: calls[f] for f in targets.MF_FUNCTIONS if calls.get(f)} == {}
    assert calls["conv_mult"] and calls["pw_mult"]  # the multiplicative stem and classifier call the helper: the
    # check can see one
    outputs, instructions = targets.run_qemu(elf)
    assert np.array_equal(outputs, run(bundle, images))
    # each tap of each conv output takes a few instructions (a load, a bounds check, a shift or a difference, ...)
    taps = sum(int(np.prod(q.shape)) * q.weight[0].size for q in bundle.nodes if q.kind == "conv")
    assert len(instructions) == 2 and all(2 * taps < n < 40 * taps for n in instructions)


@pytest.mark.skipif(bool(targets.missing("arm-none-eabi-gcc", "arm-none-eabi-size")),
                    reason="gcc-arm-none-eabi missing (make toolchains)")
def test_a_cortex_m4_build_holds_the_weights_in_its_code_and_data(calibrated, tmp_path):
    models, x = calibrated
    emitted = emit_c(quantize(models["shift"], x[:32], act_bits=8))
    targets.write_sources(emitted, tmp_path)
    size = targets.cortex_m4_size(tmp_path)
    assert size["text"] + size["data"] > emitted.weight_bytes and size["bss"] >= emitted.arena_bytes


@pytest.mark.skipif(bool(targets.missing(*RV_TOOLS)), reason="RV32I toolchain or QEMU missing (make toolchains)")
def test_with_mf_stem_and_classifier_the_whole_model_calls_no_multiply_on_rv32i(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(34, 1, 28, 28)
    model = create_model("mobilenetv2_tiny", 10, op="add", in_chans=1, input_size=28, mf_stem_head=True).train()
    with torch.no_grad():
        model(x[:32])
    bundle = quantize(model.eval(), x[:32])
    counts = {}
    run(bundle, x[32:33].numpy(), counts)
    assert not any(c.get("mult") for c in counts.values())  # a 4x4 pool is a shift too
    targets.write_sources(emit_c(bundle), tmp_path, input_integers(bundle, x[32:].numpy()))
    elf = targets.build_rv32i(tmp_path)
    model_functions = {"model_run", "conv_mult", "pw_mult", *targets.MF_FUNCTIONS}
    calls = targets.helper_calls(elf)
    assert "model_run" in calls and not any(calls.get(f) for f in model_functions)
    outputs, _ = targets.run_qemu(elf)
    assert np.array_equal(outputs, run(bundle, x[32:].numpy()))


def test_adder_weights_sit_finer_than_their_input_at_8_bits(calibrated):
    models, x = calibrated
    for bits, r in ((8, ADD_WEIGHT_GUARD), (16, 0)):
        bundle = quantize(models["add"], x[:32], act_bits=bits)
        adders = [q for q in bundle.nodes if q.kind == "conv" and q.op == "add"]
        assert adders and all(q.guard == r for q in adders)
        fracs = {0: bundle.frac_in, **{q.output: q.frac_out for q in bundle.nodes}}
        for q in adders:  # the accumulator's grid: the input's plus r (per channel for a depthwise adder)
            assert np.array_equal(np.asarray(q.frac_acc) - r, np.asarray(fracs[q.inputs[0]]))
