#!/usr/bin/env bash
# Runs the real critest (kubernetes-sigs/cri-tools) against crius, offline:
# every image critest pulls comes from a loopback registry of busybox
# stand-ins (images.sh) that registries.conf mirrors the upstream registries
# to, and crius runs on its own socket, root and runroot in a temporary
# directory. As root (crius needs it).
#
#   test/conformance/run.sh [critest/ginkgo flags...]
#   e.g. run.sh -ginkgo.focus='Image Manager'   run.sh -ginkgo.skip='Streaming'
#
# Environment:
#   CRIUS     crius binary (default target/debug/crius; crius-monitor must sit
#             next to it)
#   CRITEST   critest binary (default: critest in PATH)
#   CRICTL    crictl, used only to remove what critest left (default: crictl
#             in PATH, else next to critest)
#   BUSYBOX   busybox the stand-ins are built from (default /bin/busybox;
#             see images.sh: make conformance uses Debian's dynamic one)
#   KEEP_WORKDIR=1   keep the temporary directory (state, registry) afterwards
#
# Writes target/conformance/: critest.log (critest's output), report.json
# (ginkgo's JSON report), summary.txt (totals and failing specs, also
# printed), crius.log, registry.log. Exits with critest's status.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$ROOT/target/conformance

CRIUS=${CRIUS:-$ROOT/target/debug/crius}
CRITEST=${CRITEST:-$(command -v critest || true)}
CRICTL=${CRICTL:-$(command -v crictl || true)}
if [ -z "$CRICTL" ] && [ -n "$CRITEST" ] && [ -x "$(dirname "$CRITEST")/crictl" ]; then
	CRICTL=$(dirname "$CRITEST")/crictl
fi

die() { echo "run.sh: $*" >&2; exit 1; }

if [ -z "$CRITEST" ] || [ ! -x "$CRITEST" ]; then
	# Not packaged for Debian: say how to get it and do not fail the build.
	cat <<-EOF
		run.sh: critest not found; set CRITEST=/path/to/critest or put it in PATH.
		critest and crictl are not packaged for Debian; build them from
		kubernetes-sigs/cri-tools with Go (offline: its vendor/ directory serves):
		    git clone https://github.com/kubernetes-sigs/cri-tools && cd cri-tools
		    make binaries     # build/bin/linux/<arch>/{critest,crictl}
		  or
		    go test -mod=vendor -c -o /usr/local/bin/critest ./cmd/critest
		    go build -mod=vendor -o /usr/local/bin/crictl ./cmd/crictl
		then: make conformance   (or CRITEST=/path/to/critest make conformance)
		Conformance not run.
	EOF
	exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (crius makes namespaces, mounts and cgroups)"
[ -x "$CRIUS" ] || die "$CRIUS not found: cargo build --bins (or set CRIUS)"
[ -x "$(dirname "$CRIUS")/crius-monitor" ] || die "crius-monitor must sit next to $CRIUS"

mkdir -p "$OUT"
rm -f "$OUT"/{critest.log,report.json,summary.txt,crius.log,registry.log}
W=$(mktemp -d "${TMPDIR:-/tmp}/crius-conformance.XXXXXX")
SOCK=$W/crius.sock
CRIUS_PID=""

# Leaves nothing running and nothing mounted: critest's pods and containers
# removed through CRI, then whatever survived crius (its shutdown never stops
# containers) killed through the runtimes' state under this run's runroot,
# then any process still working in the directory, then the mounts.
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	if [ -n "$CRIUS_PID" ] && kill -0 "$CRIUS_PID" 2>/dev/null; then
		if [ -n "$CRICTL" ]; then
			timeout 120 "$CRICTL" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" \
				rmp --all --force >/dev/null 2>&1
		fi
		kill -TERM "$CRIUS_PID"
		for _ in $(seq 150); do kill -0 "$CRIUS_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$CRIUS_PID" 2>/dev/null
		wait "$CRIUS_PID" 2>/dev/null
	fi
	local state runtime id
	for state in "$W"/run/runtimes/*/; do
		[ -d "$state" ] || continue
		runtime=$(basename "$state")
		command -v "$runtime" >/dev/null || continue
		for id in $("$runtime" --root "$state" list -q 2>/dev/null); do
			"$runtime" --root "$state" kill "$id" KILL >/dev/null 2>&1
			"$runtime" --root "$state" delete --force "$id" >/dev/null 2>&1
		done
	done
	if [ -f "$W/images/registry.pid" ]; then
		kill "$(cat "$W/images/registry.pid")" 2>/dev/null
	fi
	# crius, its monitors and the registry name this run's directory in their
	# command lines (so does a critest cut short); nothing else on the machine does.
	local p cmd
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[ "$p" = $$ ] || [ "$p" = "$BASHPID" ] && continue
		cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue
		[[ $cmd == *"$W/"* ]] && kill -KILL "$p" 2>/dev/null
	done
	cp "$W/images/registry.log" "$OUT/registry.log" 2>/dev/null
	ip link del critest0 2>/dev/null
	# Deepest first; lazily, so a busy mount cannot keep the rest mounted.
	awk -v w="$W/" 'index($5, w) == 1 { print length($5), $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2- | while read -r m; do umount -l "$m" 2>/dev/null; done
	if [ "${KEEP_WORKDIR:-}" = 1 ]; then
		echo "run.sh: kept $W"
	else
		rm -rf --one-file-system "$W"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The stand-in images, in a registry of their own.
"$HERE/images.sh" --workdir "$W/images" >"$OUT/images.log" 2>&1 ||
	die "images.sh failed: $(tail -5 "$OUT/images.log")"
REG=$(cat "$W/images/registry.addr")
echo "run.sh: $(wc -l <"$W/images/images.txt") stand-in images on $REG"

# 2. registries.conf: each upstream registry critest pulls from gets the
# loopback registry as its mirror, under a path named after it
# (gcr.io/x/y:t is fetched as $REG/gcr.io/x/y:t), so crius still records
# the upstream names critest checks for.
{
	echo "# Written by test/conformance/run.sh: upstream registries mirrored to the stand-ins."
	cut -d/ -f1 "$W/images/images.txt" | sort -u | while read -r host; do
		printf '\n[[registry]]\nprefix = "%s"\nlocation = "%s"\n\n[[registry.mirror]]\nlocation = "%s/%s"\n' \
			"$host" "$host" "$REG" "$host"
	done
} >"$W/registries.conf"

# 3. crius, from a copy of its binaries: a rebuild during a run must not
# change the daemon under test (crius-monitor is found next to crius).
mkdir -p "$W/bin"
cp "$CRIUS" "$W/bin/crius"
cp "$(dirname "$CRIUS")/crius-monitor" "$W/bin/crius-monitor"
# A pod network (CNI) of the run's own: bridge critest0 on 10.232.0.0/16,
# its IPAM files under the work directory, host ports through portmap.
mkdir -p "$W/net.d"
cat >"$W/net.d/10-critest.conflist" <<-EOF
	{"cniVersion": "1.0.0", "name": "critest", "plugins": [
	  {"type": "loopback"},
	  {"type": "bridge", "bridge": "critest0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
	   "ipam": {"type": "host-local", "dataDir": "$W/ipam",
	            "ranges": [[{"subnet": "10.232.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
	  {"type": "portmap", "capabilities": {"portMappings": true}}
	]}
EOF
cat >"$W/crius.toml" <<-EOF
	listen = "$SOCK"
	cni_config_dir = "$W/net.d"
	root = "$W/root"
	runroot = "$W/run"
	registries_conf = "$W/registries.conf"
	# Offline, a reference the mirror lacks (critest's digest-pinned image)
	# falls through to the real registry, whose connect errors are retried for
	# this long (default 60 s) before the pull fails.
	pull_retry_budget_seconds = 5
EOF
"$W/bin/crius" --config "$W/crius.toml" </dev/null >"$OUT/crius.log" 2>&1 &
CRIUS_PID=$!
ready=""
for _ in $(seq 300); do
	kill -0 "$CRIUS_PID" 2>/dev/null || die "crius exited: $(tail -5 "$OUT/crius.log")"
	if [ -S "$SOCK" ]; then
		if [ -n "$CRICTL" ]; then
			"$CRICTL" --runtime-endpoint "unix://$SOCK" --timeout 2s version >/dev/null 2>&1 && ready=1
		else
			ready=1
		fi
	fi
	[ -n "$ready" ] && break
	sleep 0.1
done
[ -n "$ready" ] || die "crius not serving on $SOCK after 30 s: $(tail -5 "$OUT/crius.log")"
echo "run.sh: crius $("$W/bin/crius" --version | cut -d' ' -f2) serving on $SOCK (pid $CRIUS_PID, log $OUT/crius.log)"

# 4. critest. Flags given to run.sh come last, so they override these.
echo "run.sh: $CRITEST $*  (output in $OUT/critest.log)"
set +e
"$CRITEST" \
	--runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" \
	-ginkgo.v -ginkgo.no-color -ginkgo.timeout=3h -ginkgo.json-report="$OUT/report.json" \
	"$@" 2>&1 | tee "$OUT/critest.log"
rc=${PIPESTATUS[0]}
set -e

# 5. Totals: ginkgo's own line, and the report's failing specs with reasons.
echo
grep -E '^Ran [0-9]+ of [0-9]+ Specs|^(SUCCESS|FAIL)! --' "$OUT/critest.log" || true
if [ -s "$OUT/report.json" ]; then
	python3 "$HERE/summarize.py" "$OUT/report.json" | tee "$OUT/summary.txt"
fi
exit "$rc"
