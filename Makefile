# warpq — every entry point. `make help` lists them.
#
# Two toolchains, kept apart on purpose:
#   - the kernel and warpq.ko: Debian's rustc-web (/usr/bin/rustc) + LLVM;
#   - the user-space workspace: rustup's cargo (whatever `cargo` is on PATH).

SHELL := /bin/bash
export WARPQ_CACHE ?= $(HOME)/.cache/warpq
VM_KERNEL ?= debug
# CMD reaches recipes through the environment: no make or shell re-quoting.
export CMD
export VM_KERNEL VM_IOMMU VM_ACCEL VM_TIMEOUT VM_EXTRA VM_NO_MODULE VM_MODULE_ARGS VM_NUMA VM_OUT BENCH SUITES

CARGO ?= cargo
GUEST_TARGET := x86_64-unknown-linux-gnu
KDIR = $(shell vm/kernel.sh --dir $(VM_KERNEL))
KMAKE_VARS = LLVM=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc BINDGEN=$(WARPQ_CACHE)/tools/bin/bindgen
MODULE_DIR ?= target/module/$(VM_KERNEL)
MODULE_NOTRACE_DIR = target/module/$(VM_KERNEL)-notrace

.PHONY: help deps kernel kernel-all module module-notrace guest hmm-tests initramfs vm-run vm-shell \
        test test-host check uapi stress bench demo clean

help:
	@echo "make demo        build everything, boot the VM, show what the driver does"
	@echo "make test        every test: the check lanes, then the VM suites on the debug kernel"
	@echo "make check       the quick gate: rustfmt, clippy, generated ABI, host tests, loom, stress/ shape"
	@echo "make uapi        regenerate driver/uapi/warpq.rs and user/src/sys.rs from driver/uapi/warpq.h"
	@echo "make stress      DURATION=600: fork/exec storm, churn, OOM, fuzz, fault injection; target/stress/summary.json"
	@echo "make bench       side-by-side benchmarks on the perf kernel: target/bench/report.md"
	@echo "make deps        install missing Debian packages and bindgen-cli"
	@echo "make kernel      build the guest kernel (VM_KERNEL=debug|perf) into $(WARPQ_CACHE)"
	@echo "make module      build warpq.ko against it (module-notrace: tracepoint calls compiled out)"
	@echo "make initramfs   pack busybox, warpq.ko, guest programs, stress-ng, trace-cmd"
	@echo "make vm-run CMD='...'   boot, load warpq.ko, run CMD, exit with its status"
	@echo "make vm-shell    interactive guest shell with warpq.ko loaded"
	@echo "options: VM_KERNEL=debug|perf VM_IOMMU=on|off VM_ACCEL=auto|tcg|kvm VM_TIMEOUT=s VM_EXTRA=dir"

deps:
	@vm/deps.sh

kernel: deps
	@vm/kernel.sh $(VM_KERNEL)

kernel-all: deps
	@vm/kernel.sh debug
	@vm/kernel.sh perf

# Kbuild writes objects beside the sources, so each flavour builds in its own
# copy of driver/ (with notifier/src beside it, where driver/ finds it);
# cp -p keeps the sources' times, so an unchanged module is not rebuilt.
module: kernel
	@mkdir -p $(MODULE_DIR)/driver $(MODULE_DIR)/notifier/src
	@cp -rp driver/. $(MODULE_DIR)/driver/ && cp -rp notifier/src/. $(MODULE_DIR)/notifier/src/
	@$(if $(MODULE_PATCH),cd $(MODULE_DIR) && patch -s -p1 < $(CURDIR)/$(MODULE_PATCH))
	@$(MAKE) -s -C $(KDIR) M=$(CURDIR)/$(MODULE_DIR)/driver $(KMAKE_VARS) modules
	@echo "module: $(MODULE_DIR)/driver/warpq.ko"

# The same module with its tracepoint calls compiled out (WARPQ_NO_TRACE=1:
# driver/Kbuild passes --cfg warpq_no_trace), for the tracepoint cost that
# `make bench` measures; initramfs.sh packs it as warpq-notrace.ko (perf only).
module-notrace: kernel
	@mkdir -p $(MODULE_NOTRACE_DIR)/driver $(MODULE_NOTRACE_DIR)/notifier/src
	@cp -rp driver/. $(MODULE_NOTRACE_DIR)/driver/ && cp -rp notifier/src/. $(MODULE_NOTRACE_DIR)/notifier/src/
	@$(MAKE) -s -C $(KDIR) M=$(CURDIR)/$(MODULE_NOTRACE_DIR)/driver $(KMAKE_VARS) WARPQ_NO_TRACE=1 modules
	@echo "module: $(MODULE_NOTRACE_DIR)/driver/warpq.ko (tracepoint calls compiled out)"

# Guest programs: statically linked, so the initramfs needs no libc for them.
guest:
	@RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build -q --release --workspace --bins --examples --features warpq/tokio \
	  --target $(GUEST_TARGET)

hmm-tests: kernel
	@if [ "$(VM_KERNEL)" = debug ]; then vm/hmm-tests.sh; fi

initramfs: module guest hmm-tests
	@vm/initramfs.sh $(VM_KERNEL)

vm-run: initramfs
	@test -n "$$CMD" || { echo "usage: make vm-run CMD='command line'"; exit 2; }
	@vm/run.sh "$$CMD"

vm-shell: initramfs
	@vm/run.sh --shell

test-host: check

check: deps
	@vm/check.sh

uapi: deps
	@$(CARGO) run -q -p warpq-uapi-gen

test: deps
	@$(MAKE) -s initramfs VM_KERNEL=debug
	@vm/test.sh all

# The long stress run (debug kernel, one boot): DURATION seconds of
# scenarios, SCENARIOS='storm oom ...' to pick some.
DURATION ?= 600
SCENARIOS ?=
stress: deps
	@$(MAKE) -s initramfs VM_KERNEL=debug
	@DURATION=$(DURATION) SCENARIOS='$(SCENARIOS)' vm/stress.sh

# Benchmarks run on the perf kernel (no KASAN, lockdep...), all in one boot.
bench: deps
	@$(MAKE) -s module-notrace VM_KERNEL=perf
	@$(MAKE) -s initramfs VM_KERNEL=perf
	@vm/bench.sh

demo: deps
	@$(MAKE) -s initramfs VM_KERNEL=debug
	@vm/demo.sh

clean:
	rm -rf target
