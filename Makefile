# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv and data on its own.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo demo-seg test lint install data toolchains clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

# Fashion-MNIST is the offline default data: Debian's package where apt exists, otherwise say how to get it.
data:
	@if [ -f $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "warning: could not install dataset-fashion-mnist with apt-get"; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install -y dataset-fashion-mnist' or pass data_dir=DIR holding the *-ubyte.gz files"; fi

# deployment checks: an RV32I cross compiler with picolibc, QEMU, and an Arm compiler (tests skip, saying why, without)
TOOLS := riscv64-unknown-elf-gcc qemu-system-riscv32 arm-none-eabi-gcc
toolchains:
	@if [ -z "$$(for t in $(TOOLS); do command -v $$t >/dev/null || echo $$t; done)" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-riscv64-unknown-elf \
		 picolibc-riscv64-unknown-elf qemu-system-misc gcc-arm-none-eabi >/dev/null) \
		|| echo "warning: could not install the deployment toolchains with apt-get; their tests will skip"; \
	else echo "deployment toolchains missing: sudo apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc gcc-arm-none-eabi (their tests skip meanwhile)"; fi

demo: install data
	$(PY) -m shiftaddaug train configs/demo.yaml overwrite=true
	$(PY) -m shiftaddaug train configs/demo.yaml name=demo_shiftaddaug aug_op=mult overwrite=true
	$(PY) -m shiftaddaug compare runs/demo runs/demo_shiftaddaug
	$(PY) -m shiftaddaug eval runs/demo_shiftaddaug/exported.pt

# segmentation: the picture lands in runs/demo_seg/examples.png
demo-seg: install data
	$(PY) -m shiftaddaug train configs/demo_seg.yaml overwrite=true
	$(PY) -m shiftaddaug eval runs/demo_seg/last.pt --examples runs/demo_seg/examples.png

lint: install
	$(VENV)/bin/ruff check shiftaddaug tests benchmarks

# one pytest worker per core, at most 4 (each holds a PyTorch of ~0.5 GB); a test file stays on one worker
JOBS := $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
test: install data toolchains lint
	$(PY) -m pytest -n $(JOBS) --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
