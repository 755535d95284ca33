"""Building generated C and running it: natively as a shared library (for checks over a whole test set and latency),
for RV32I (no multiply instruction) under QEMU, and the code and data size of a Cortex-M4 build. The cross targets
need Debian's gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf, qemu-system-misc and gcc-arm-none-eabi
(``make toolchains``)."""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .emit import Emitted, inputs_header

HARNESS = Path(__file__).parent / "c" / "harness.c"
RV32I = ["riscv64-unknown-elf-gcc", "-march=rv32i", "-mabi=ilp32", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
         "--specs=picolibc.specs", "--crt0=semihost", "--oslib=semihost",  # printf and exit through semihosting
         "-Wl,--defsym=__flash=0x80000000", "-Wl,--defsym=__flash_size=0x800000",  # QEMU virt's RAM, split
         "-Wl,--defsym=__ram=0x80800000", "-Wl,--defsym=__ram_size=0x800000"]
QEMU = ["qemu-system-riscv32", "-machine", "virt", "-nographic", "-bios", "none",
        "-semihosting-config", "enable=on,target=native",
        "-icount", "shift=0"]  # QEMU's instruction counting: minstret is then the exact count of retired instructions
CORTEX_M4 = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
             "-c"]
# the functions that run the multiplication-free layers, and the libgcc helpers that stand in for a multiply or a
# division on a core without them
MF_FUNCTIONS = ("conv_shift", "conv_add", "pw_shift", "pw_add", "requant", "round_shift", "round_even", "shl64",
                "add_tensors", "pool_shift", "pool_sum")
MUL_HELPERS = re.compile(r"<(__mul[sd]i3|__muldi3|__div[sd]i3|__udiv[sd]i3|__mod[sd]i3|__umod[sd]i3)>")


def missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def write_sources(emitted: Emitted, folder: Path, inputs=None) -> None:
    (folder / "model.c").write_text(emitted.source)
    (folder / "model.h").write_text(emitted.header)
    shutil.copy(HARNESS, folder / "harness.c")
    if inputs is not None:
        (folder / "inputs.h").write_text(inputs_header(inputs))


NATIVE = ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]


class NativeModel:
    """``model.c`` of ``folder`` compiled for this machine (``-O2``) and called through ctypes, an image at a time.
    One folder per model: a process loads a library path once, so a rebuilt one at the same path would not load."""

    def __init__(self, folder: Path, act_bits: int, outputs: int):
        lib = folder / "libmodel.so"
        subprocess.run([*NATIVE, "-shared", "-fPIC", "-I", str(folder), "-o", str(lib), str(folder / "model.c")],
                       check=True, capture_output=True, text=True)
        self.fn = ctypes.CDLL(str(lib.resolve())).model_run
        self.fn.argtypes, self.fn.restype = [ctypes.c_void_p, ctypes.c_void_p], None  # pointers, not C ints
        self.dtype, self.outputs = (np.int8 if act_bits == 8 else np.int16), outputs

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """Integer outputs ``[N, outputs]`` of integer images ``[N, ...]`` (``engine.input_integers``)."""
        x = np.ascontiguousarray(inputs, dtype=self.dtype).reshape(len(inputs), -1)
        out = np.zeros((len(x), self.outputs), dtype=self.dtype)
        for i in range(len(x)):
            self.fn(x[i].ctypes.data, out[i].ctypes.data)
        return out.astype(np.int64)


def build_rv32i(folder: Path) -> Path:
    """The model with the embedded-inputs harness as a bare-metal RV32I program (``folder/model.elf``) that also
    prints the instructions each image took."""
    elf = folder / "model.elf"
    subprocess.run([*RV32I, "-DMODEL_EMBEDDED_INPUTS", "-DMODEL_INSTRET", "-I", str(folder), "-o", str(elf),
                    str(folder / "model.c"), str(folder / "harness.c")], check=True, capture_output=True, text=True)
    return elf


def helper_calls(elf: Path) -> dict[str, list[str]]:
    """Per function of the program: the multiply or division helpers it calls."""
    dump = subprocess.run(["riscv64-unknown-elf-objdump", "-d", str(elf)], check=True, capture_output=True,
                          text=True).stdout
    calls: dict[str, list[str]] = {}
    fn = None
    for line in dump.splitlines():
        if m := re.match(r"^[0-9a-f]+ <([^>]+)>:", line):
            fn = m.group(1).split(".")[0]  # conv_mult.constprop.0 -> conv_mult
            calls.setdefault(fn, [])
        elif fn and (m := MUL_HELPERS.search(line)) and ("jal" in line or "call" in line):
            calls[fn].append(m.group(1))
    return calls


def run_qemu(elf: Path, timeout: float = 300) -> tuple[np.ndarray, list[int]]:
    """The program run under QEMU: each image's output integers ``[N, outputs]`` and the instructions its
    ``model_run`` retired. (Semihosting prints to QEMU's standard error when that is no terminal.)"""
    r = subprocess.run([*QEMU, "-kernel", str(elf)], check=True, capture_output=True, text=True, timeout=timeout)
    outputs, instructions = [], []
    for line in (r.stdout or r.stderr).splitlines():
        if line.startswith("instret "):
            hi, lo = line.split()[1:]
            instructions.append((int(hi) << 32) + int(lo))
        else:
            outputs.append([int(v) for v in line.split()])
    return np.array(outputs), instructions


def cortex_m4_size(folder: Path) -> dict[str, int]:
    """Code (text) and data bytes of the model compiled for a Cortex-M4 (the object file, no harness)."""
    obj = folder / "model_m4.o"
    subprocess.run([*CORTEX_M4, "-I", str(folder), "-o", str(obj), str(folder / "model.c")], check=True,
                   capture_output=True, text=True)
    out = subprocess.run(["arm-none-eabi-size", str(obj)], check=True, capture_output=True, text=True).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}
