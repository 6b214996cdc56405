#!/usr/bin/env bash
# Stand-ins for every image critest (kubernetes-sigs/cri-tools) pulls, built
# from busybox on this machine and pushed to a loopback docker-registry
# under the upstream repository paths and tags, so critest runs offline with
# registries.conf mirroring registry.k8s.io, k8s.gcr.io, gcr.io and quay.io
# to it (run.sh does that).
#
#   images.sh [--workdir DIR] [--verify] [--stop]
#
# Starts `docker-registry` on a free 127.0.0.1 port with its storage in
# DIR/registry (DIR defaults to a new temporary directory), pushes the
# stand-ins, and leaves the registry running:
#   DIR/registry.addr   127.0.0.1:PORT
#   DIR/registry.pid    its pid (kill it when done; --stop does at the end)
#   DIR/images.txt      every upstream reference pushed, one per line
#   DIR/registry.log    its log
# --verify reads every reference back with `skopeo inspect` (the artifact
# with --raw) and fails if one does not answer as pushed.
#
# Needs: docker-registry, python3, a busybox ($BUSYBOX, default /bin/busybox
# from busybox-static), a C compiler with a static libc (cc, libc6-dev) for
# pause and nonewprivs, skopeo for --verify.
#
# What each stand-in is, and which critest image cannot be reproduced, is in
# test/conformance/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STANDINS=$HERE/standins
BUSYBOX=${BUSYBOX:-/bin/busybox}
CC=${CC:-cc}

WORKDIR="" VERIFY="" STOP=""
while [ $# -gt 0 ]; do
	case "$1" in
	--workdir) WORKDIR=$2; shift 2 ;;
	--verify) VERIFY=1; shift ;;
	--stop) STOP=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
WORKDIR=${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/crius-images.XXXXXX")}
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)

die() { echo "images.sh: $*" >&2; exit 1; }
for tool in docker-registry python3 "$CC"; do
	command -v "$tool" >/dev/null || die "$tool not found (make conformance installs what is missing)"
done
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found (apt-get install busybox-static, or set BUSYBOX)"
# Upstream busybox's sh runs commands from PATH, so masking /bin/ls makes
# `sh -c ls` fail, which critest's MaskedPaths spec expects. A busybox built
# with FEATURE_SH_STANDALONE (Debian's busybox-static) runs its applets
# built in and that spec cannot pass; say so. Debian's dynamically linked
# busybox has no such shell (make conformance unpacks one under target/).
if env -i PATH=/nonexistent "$BUSYBOX" sh -c 'ls / >/dev/null 2>&1'; then
	echo "images.sh: warning: $BUSYBOX's sh runs applets without /bin (FEATURE_SH_STANDALONE):" \
		"critest's MaskedPaths spec will fail because of the stand-ins; BUSYBOX=<a busybox without it> avoids that" >&2
fi

# The platform the images are for: this machine, named as Go names it
# (critest asks for hostnet-nginx-$GOARCH).
case "$(uname -m)" in
x86_64) ARCH=amd64 VARIANT="" ;;
aarch64) ARCH=arm64 VARIANT=v8 ;;
armv7l) ARCH=arm VARIANT=v7 ;;
ppc64le) ARCH=ppc64le VARIANT="" ;;
s390x) ARCH=s390x VARIANT="" ;;
*) die "unsupported machine $(uname -m)" ;;
esac

# ---------------------------------------------------------------- registry

REGISTRY_DIR=$WORKDIR/registry
REGISTRY_PID=""
start_registry() {
	mkdir -p "$REGISTRY_DIR/storage"
	local port
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	REG=127.0.0.1:$port
	cat >"$REGISTRY_DIR/config.yml" <<-EOF
		version: 0.1
		log:
		  level: warn
		  accesslog:
		    disabled: false
		storage:
		  filesystem:
		    rootdirectory: $REGISTRY_DIR/storage
		  delete:
		    enabled: true
		http:
		  addr: $REG
		  secret: crius-conformance
	EOF
	docker-registry serve "$REGISTRY_DIR/config.yml" </dev/null >>"$WORKDIR/registry.log" 2>&1 &
	REGISTRY_PID=$!
	echo "$REGISTRY_PID" >"$WORKDIR/registry.pid"
	echo "$REG" >"$WORKDIR/registry.addr"
	local i
	for i in $(seq 100); do
		kill -0 "$REGISTRY_PID" 2>/dev/null || die "docker-registry exited: $(tail -5 "$WORKDIR/registry.log")"
		if python3 -c "import urllib.request, sys; urllib.request.urlopen('http://$REG/v2/', timeout=2)" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	die "docker-registry not answering on $REG after 10 s: $(tail -5 "$WORKDIR/registry.log")"
}

# The registry is only left running when everything was pushed.
on_exit() {
	local rc=$?
	if [ -n "$REGISTRY_PID" ] && { [ $rc -ne 0 ] || [ -n "$STOP" ]; }; then
		kill "$REGISTRY_PID" 2>/dev/null && wait "$REGISTRY_PID" 2>/dev/null || true
		rm -f "$WORKDIR/registry.pid"
	fi
	exit $rc
}
trap on_exit EXIT

# ---------------------------------------------------------------- trees

TREES=$WORKDIR/trees
rm -rf "$TREES" && mkdir -p "$TREES"

# The busybox base layer, as the docker-library busybox images (1.29 for
# e2e-test-images/busybox, 1.37 for cri-tools' test images) lay it out: every
# applet a hard link of /bin/busybox in /bin, the buildroot skeleton's users
# and groups (root in wheel; www-data 33; nobody 65534), /root 0700, /tmp 1777.
# Debian's busybox (1.35, static or not) lacks two applets critest runs,
# pgrep and ipcs; small scripts stand in for them (standins/pgrep, standins/ipcs).
base=$TREES/busybox
mkdir -p "$base"/{bin,dev,etc,home,root,tmp,usr/sbin,var/spool/mail,var/www}
install -m 0755 "$BUSYBOX" "$base/bin/busybox"
# A dynamically linked busybox brings its loader and libraries, at the paths
# it was linked against, as the busybox:glibc images carry glibc in /lib.
{ LC_ALL=C ldd "$BUSYBOX" 2>&1 || true; } | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
	while read -r lib; do
		install -D -m 0755 "$(readlink -f "$lib")" "$base$lib"
	done
find "$base" -type d -exec chmod 0755 {} +
chmod 0700 "$base/root"
chmod 1777 "$base/tmp"
for applet in $("$BUSYBOX" --list); do
	[ "$applet" = busybox ] || ln "$base/bin/busybox" "$base/bin/$applet"
done
for script in pgrep ipcs; do
	[ -e "$base/bin/$script" ] || install -m 0755 "$STANDINS/$script" "$base/bin/$script"
done
install -m 0644 "$STANDINS/etc/passwd" "$STANDINS/etc/group" "$base/etc/"
install -m 0600 "$STANDINS/etc/shadow" "$base/etc/"

# A one-file layer: `ADD $TEST $TEST` in cri-tools' images/image-test (an
# empty file at /$TEST) tells test-image-1, -2, -3, -latest and the tags apart.
file_layer() {
	mkdir -p "$TREES/file-$1"
	: >"$TREES/file-$1/$1"
	chmod 0644 "$TREES/file-$1/$1"
	echo "$TREES/file-$1"
}

# test-image-predefined-group's layer: what `adduser -u 1000 -D default-user
# && addgroup -g 50000 group-defined-in-image && addgroup default-user
# group-defined-in-image` leaves in busybox's /etc and /home.
predef=$TREES/predefined-group
mkdir -p "$predef/etc" "$predef/home/default-user"
chmod 0755 "$predef/etc" "$predef/home" "$predef/home/default-user"
{ cat "$STANDINS/etc/passwd"; echo "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh"; } >"$predef/etc/passwd"
{ cat "$STANDINS/etc/group"; echo "default-user:x:1000:"; echo "group-defined-in-image:x:50000:default-user"; } >"$predef/etc/group"
{ cat "$STANDINS/etc/shadow"; echo "default-user:!:19723:0:99999:7:::"; } >"$predef/etc/shadow"
chmod 0644 "$predef/etc/passwd" "$predef/etc/group"
chmod 0600 "$predef/etc/shadow"

# nginx (e2e-test-images/nginx:1.14-2 is nginx:1.14-alpine; cri-tools'
# hostnet-nginx is nginx:1.25.0 listening on 12003): the nginx stand-in script
# in /usr/sbin, its config, a page, and the nginx user and group (101) that
# the nginx images have. $1 layer name, $2 default.conf to install.
nginx_layer() {
	local t=$TREES/$1
	mkdir -p "$t/usr/sbin" "$t/etc/nginx/conf.d" "$t/usr/share/nginx/html" "$t/var/run" "$t/var/log/nginx" "$t/var/cache/nginx"
	install -m 0755 "$STANDINS/nginx" "$t/usr/sbin/nginx"
	install -m 0755 "$STANDINS/docker-entrypoint.sh" "$t/docker-entrypoint.sh"
	install -m 0644 "$2" "$t/etc/nginx/conf.d/default.conf"
	install -m 0644 "$STANDINS/nginx-index.html" "$t/usr/share/nginx/html/index.html"
	{ cat "$STANDINS/etc/passwd"; echo "nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin"; } >"$t/etc/passwd"
	{ cat "$STANDINS/etc/group"; echo "nginx:x:101:nginx"; } >"$t/etc/group"
	chmod 0644 "$t/etc/passwd" "$t/etc/group"
	find "$t" -type d -exec chmod 0755 {} +
	echo "$t"
}

# httpd (e2e-test-images/httpd:2.4.39-4 is httpd:2.4.39-alpine): the
# httpd-foreground stand-in and Apache's default page under /usr/local/apache2.
httpd=$TREES/httpd
mkdir -p "$httpd/usr/local/apache2/bin" "$httpd/usr/local/apache2/htdocs" "$httpd/usr/local/apache2/logs"
install -m 0755 "$STANDINS/httpd-foreground" "$httpd/usr/local/apache2/bin/httpd-foreground"
echo '<html><body><h1>It works!</h1></body></html>' >"$httpd/usr/local/apache2/htdocs/index.html"
chmod 0644 "$httpd/usr/local/apache2/htdocs/index.html"
find "$httpd" -type d -exec chmod 0755 {} +

# nonewprivs: nnp, setuid root, prints its effective uid. A compiled program,
# since the kernel ignores setuid on scripts and busybox drops the privilege.
nnp=$TREES/nonewprivs
mkdir -p "$nnp/usr/local/bin"
"$CC" -static -Os -s -o "$nnp/usr/local/bin/nnp" "$STANDINS/nnp.c" ||
	die "$CC -static failed building nnp (apt-get install gcc libc6-dev)"
chmod 4755 "$nnp/usr/local/bin/nnp"
chmod 0755 "$nnp/usr" "$nnp/usr/local" "$nnp/usr/local/bin"

# pause: a single static binary, the whole image as in registry.k8s.io/pause.
pause=$TREES/pause
mkdir -p "$pause"
"$CC" -static -Os -s -o "$pause/pause" "$STANDINS/pause.c" ||
	die "$CC -static failed building pause (apt-get install gcc libc6-dev)"
chmod 0755 "$pause/pause"

# The image-volume artifact of the Kubernetes 1.31 announcement
# (quay.io/crio/artifact:v1): two files, dir/file with 1 and file with 2.
art=$TREES/artifact
mkdir -p "$art"
echo 1 >"$art/dir-file"
echo 2 >"$art/file"

# ---------------------------------------------------------------- push

start_registry
: >"$WORKDIR/images.txt"

PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# push REPO TAGS(comma-separated) CONFIG-JSON [--list] LAYER-DIR... [-- oci_push.py options]
push() {
	local repo=$1 tags=$2 config=$3
	shift 3
	local args=(image --registry "$REG" --repo "$repo" --config "$config" --arch "$ARCH")
	[ -n "$VARIANT" ] && args+=(--variant "$VARIANT")
	local tag
	for tag in ${tags//,/ }; do
		args+=(--tag "$tag")
		echo "$repo:$tag" >>"$WORKDIR/images.txt"
	done
	while [ $# -gt 0 ]; do
		case "$1" in
		--list) args+=(--list) ;;
		--chown) args+=(--chown "$2"); shift ;;
		*) args+=(--layer "$1") ;;
		esac
		shift
	done
	python3 "$HERE/oci_push.py" "${args[@]}"
}

busybox_config='{"Env":["'$PATH_ENV'"],"Cmd":["sh"]}'
user_config() { echo '{"Env":["'$PATH_ENV'"],"Cmd":["sh"],"User":"'"$1"'"}'; }

CRI=gcr.io/k8s-staging-cri-tools
E2E=registry.k8s.io/e2e-test-images

# cri-tools' images/build: multi-arch lists, except hostnet-nginx-$ARCH,
# which is one of the per-arch images its list is made of.
for name in test-image-1 test-image-2 test-image-3 test-image-latest; do
	push "$CRI/$name" latest "$busybox_config" --list "$base" "$(file_layer "$name")"
done
push "$CRI/test-image-tag" test "$busybox_config" --list "$base" "$(file_layer test)"
push "$CRI/test-image-tag" all "$busybox_config" --list "$base" "$(file_layer all)"
push "$CRI/test-image-tags" 1,2,3 "$busybox_config" --list "$base" "$(file_layer same-image)"
push "$CRI/test-image-user-uid" latest "$(user_config 1002)" --list "$base"
push "$CRI/test-image-user-username" latest "$(user_config www-data)" --list "$base"
push "$CRI/test-image-user-uid-group" latest "$(user_config 1003:1004)" --list "$base"
push "$CRI/test-image-user-username-group" latest "$(user_config www-data:1004)" --list "$base"
push "$CRI/test-image-predefined-group" latest "$(user_config 1000)" --list "$base" "$predef" \
	--chown home/default-user=1000:1000
push "$CRI/hostnet-nginx-$ARCH" latest \
	'{"Env":["'$PATH_ENV'","NGINX_VERSION=1.25.0"],"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],"ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGQUIT"}' \
	"$base" "$(nginx_layer hostnet-nginx "$STANDINS/etc/nginx/hostnet.conf")"
# Not reproducible: test-image-digest is pulled by digest
# (sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf), the
# hash of upstream's exact bytes; no stand-in can have it, so none is pushed.

# Kubernetes e2e test images and pause: multi-arch lists upstream.
push "$E2E/busybox" 1.29-2 "$busybox_config" --list "$base"
push "$E2E/nginx" 1.14-2 \
	'{"Env":["'$PATH_ENV'","NGINX_VERSION=1.14.2"],"Cmd":["nginx","-g","daemon off;"],"ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGTERM"}' \
	--list "$base" "$(nginx_layer nginx "$STANDINS/etc/nginx/default.conf")"
push "$E2E/httpd" 2.4.39-4 \
	'{"Env":["PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","HTTPD_PREFIX=/usr/local/apache2","HTTPD_VERSION=2.4.39"],"Cmd":["httpd-foreground"],"WorkingDir":"/usr/local/apache2","ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGWINCH"}' \
	--list "$base" "$httpd"
push "$E2E/nonewprivs" 1.3 '{"Env":["'$PATH_ENV'"],"Cmd":["nnp"]}' --list "$base" "$nnp"
# One image under both names: critest checks they have one image id.
pause_config='{"Env":["'$PATH_ENV'"],"Entrypoint":["/pause"],"User":"65535:65535","WorkingDir":"/"}'
push registry.k8s.io/pause 3.9 "$pause_config" --list "$pause"
push k8s.gcr.io/pause 3.9 "$pause_config" --list "$pause"

# The artifact, layers in the order oras was given them.
python3 "$HERE/oci_push.py" artifact --registry "$REG" --repo quay.io/crio/artifact --tag v1 \
	--file "dir/file=$art/dir-file" --file "file=$art/file"
echo "quay.io/crio/artifact:v1" >>"$WORKDIR/images.txt"

# ---------------------------------------------------------------- verify

if [ -n "$VERIFY" ]; then
	command -v skopeo >/dev/null || die "skopeo not found (apt-get install skopeo)"
	while read -r ref; do
		if [ "$ref" = quay.io/crio/artifact:v1 ]; then
			# skopeo 1.9 cannot inspect an artifact's config; the raw manifest
			# must be the oras shape.
			skopeo inspect --raw --tls-verify=false "docker://$REG/$ref" | python3 -c '
import json, sys
m = json.load(sys.stdin)
assert m["artifactType"] == "application/vnd.unknown.artifact.v1", m
assert m["config"]["mediaType"] == "application/vnd.oci.empty.v1+json", m
assert [l["annotations"]["org.opencontainers.image.title"] for l in m["layers"]] == ["dir/file", "file"], m
assert {l["mediaType"] for l in m["layers"]} == {"application/vnd.oci.image.layer.v1.tar"}, m
' || die "$ref: not the oras artifact shape"
			for title in dir/file file; do
				digest=$(skopeo inspect --raw --tls-verify=false "docker://$REG/$ref" |
					python3 -c 'import json, sys; print(next(l["digest"] for l in json.load(sys.stdin)["layers"] if l["annotations"]["org.opencontainers.image.title"] == sys.argv[1]))' "$title")
				printf '  %-60s %s = %s\n' "$ref" "$title" \
					"$(python3 -c "import urllib.request; print(repr(urllib.request.urlopen('http://$REG/v2/quay.io/crio/artifact/blobs/$digest').read().decode()))")"
			done
			continue
		fi
		out=$(skopeo inspect --tls-verify=false "docker://$REG/$ref") || die "skopeo inspect $ref failed"
		printf '  %-60s %s\n' "$ref" "$(echo "$out" | python3 -c 'import json, sys; i = json.load(sys.stdin); print(i["Digest"][:19], i["Architecture"], len(i["Layers"]), "layer(s)")')"
	done <"$WORKDIR/images.txt"
fi

echo "images.sh: $(wc -l <"$WORKDIR/images.txt") references pushed to $REG (docker-registry pid $REGISTRY_PID, storage $REGISTRY_DIR)"
if [ -n "$STOP" ]; then
	echo "images.sh: registry stopped (--stop)"
else
	echo "images.sh: stop it with: kill \$(cat $WORKDIR/registry.pid)"
fi
