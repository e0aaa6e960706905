# pmxcfs in Rust: build, test, bench.
#
#   make run     install what is missing, build, run the daemon in local mode on a
#                temporary mountpoint and data dir (foreground; Ctrl-C stops it)
#   make test    install what is missing, build, run every test (CI runs this)
#   make bench   criterion benchmarks + bytes written per change (BENCHMARKS.md)
#   make bench-cluster   3-node namespace cluster: replication figures
#   make deb     the Debian package (cargo-deb), checked with lintian
#   make deps    only install the Debian packages and cargo-deb (idempotent)
#   make fault-long   the 3-node fault campaign's long form (20 partitions, 20 daemon
#                kills, 10 corosync kills; RELIABILITY.md)
#   make soak    30 minutes of random faults in the 3-node cluster (RSS, fds, journal)
#   make sim-strict   the DFSM simulation, 100,000 seeds of write-safe groups (3 of 4
#                with extended virtual synchrony: the own-delivery window)
#   make fuzz    every fuzz target FUZZ_SECONDS (600) each, FUZZ_JOBS (1) at a time
#   make mutants mutation testing (cargo-mutants) of MUTANTS_FILES; hours; mutants.out/

CARGO ?= cargo
# Where cargo puts its builds (honours CARGO_TARGET_DIR).
TARGET_DIR ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
# Debian packages the build and the tests need: a C compiler for the bundled
# LMDB and sqlite (and the C-style CPG member of the cluster test), fuse3 for
# the FUSE mount tests, corosync and its client libraries (rust-corosync links
# -lcpg -lcfg -lcmap -lquorum -lvotequorum), iproute2 for the namespace lab, libqb for the
# IPC service, librrd and libclang (the rrd crate's bindgen) for RRD files, rrdcached and
# rrdtool for the RRD tests, lintian and systemd (systemd-analyze) for the package test.
DEB_PACKAGES := build-essential pkg-config fuse3 corosync libcpg-dev libcfg-dev \
	libcmap-dev libquorum-dev libvotequorum-dev libcorosync-common-dev libqb-dev iproute2 \
	librrd-dev libclang-dev rrdcached rrdtool lintian systemd strace
# cargo-deb builds the Debian package (make deb, and the package test).
CARGO_DEB_VERSION := 3.8.0

.PHONY: all build run test deps deb bench bench-bytes bench-e2e bench-cluster perf check fmt clippy clean \
	fault-long soak sim-strict fuzz mutants

all: build

deps:
	@missing=""; for pkg in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		[ "$$(id -u)" = 0 ] || { echo "need root to install:$$missing" >&2; exit 1; }; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo (Rust 1.95) is required" >&2; exit 1; }
	@$(CARGO) deb --version 2>/dev/null | grep -q "$(CARGO_DEB_VERSION)" || \
		$(CARGO) install cargo-deb --locked --version $(CARGO_DEB_VERSION)

build: deps
	$(CARGO) build --workspace --locked

run: deps
	$(CARGO) build --locked --release -p pmxcfs
	@dir=$$(mktemp -d /tmp/pmxcfs-run.XXXXXX); \
	echo "pmxcfs: mountpoint $$dir/mnt  data dir $$dir/data  run dir $$dir/run"; \
	echo "pmxcfs: local mode, node name $$(uname -n | cut -d. -f1); Ctrl-C unmounts and stops"; \
	$(TARGET_DIR)/release/pmxcfs -f -l --mountpoint $$dir/mnt --data-dir $$dir/data \
		--run-dir $$dir/run --pid-file $$dir/run/pmxcfs.pid

test: deps
	$(CARGO) build --workspace --locked --all-targets
	$(CARGO) test --workspace --locked

check: fmt clippy test

fault-long: deps
	PMXCFS_FAULT_CYCLES=long $(CARGO) test --locked --test fault_campaign -- --nocapture

soak: deps
	PMXCFS_FAULT_SOAK_SECS=$${SOAK_SECS:-1800} $(CARGO) test --locked --test fault_campaign \
		-- --nocapture

fuzz: deps
	fuzz/run.sh

# The parts issue 14 names: the store, the DFSM, the DCDB application, the wire codecs
# and cluster mode's mutation path (~1,660 mutants). Each runs the tests of the three
# packages (a mutant of the store or the DCDB application is also caught by the tests of
# the crates built on them): many hours; MUTANTS_ARGS narrows it (TESTING.md).
MUTANTS_ARGS ?= -p pmxcfs-store -p pmxcfs-cpg -p pmxcfs-fsproto -f 'store/src/**' \
	-f cpg/src/dfsm.rs -f cpg/src/dcdb.rs -f 'cpg/src/wire/**' -f fsproto/src/cluster.rs \
	--test-package pmxcfs-store --test-package pmxcfs-cpg --test-package pmxcfs-fsproto
mutants: deps
	$(CARGO) mutants --version >/dev/null 2>&1 || $(CARGO) install cargo-mutants --locked
	$(CARGO) mutants --no-shuffle --timeout-multiplier 3 $(MUTANTS_ARGS)

sim-strict:
	DFSM_SIM_POLICY=strict DFSM_SIM_SEEDS=100000 $(CARGO) test --release --locked \
		-p pmxcfs-cpg --test dfsm_sim dfsm_simulation -- --nocapture

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The Debian package (target/debian/pmxcfs-rs_*.deb); packaging/deb/ says what it does.
deb: deps
	$(CARGO) build --locked --release -p pmxcfs
	$(CARGO) deb --no-build
	lintian --fail-on error --allow-root $(TARGET_DIR)/debian/pmxcfs-rs_*.deb

bench: deps
	$(CARGO) bench -p pmxcfs-bench --locked
	$(MAKE) bench-bytes
	$(MAKE) bench-e2e

# End-to-end: fsload against the daemon and a tmpfs in one run (needs root).
bench-cluster: deps
	$(CARGO) build --release --locked -p pmxcfs -p pmxcfs-bench --bin pmxcfs --bin cluster-bench
	bench/cluster.sh

bench-e2e: deps
	$(CARGO) build --release --locked -p pmxcfs -p pmxcfs-bench --bin pmxcfs --bin fsload
	bench/e2e.sh

perf: deps
	perf/flamegraph.sh

bench-bytes: deps
	$(CARGO) run -p pmxcfs-bench --release --locked --bin store-bytes

clean:
	$(CARGO) clean
