#!/usr/bin/env bash
# Builds the tokenproxy container image from the repository's Dockerfile with
# buildah, without any container registry, and checks the result:
#
#   - a builder base image is made from scratch plus the host's Go toolchain
#     (GOROOT, /bin/sh and the libraries it needs);
#   - a runtime base image is made from scratch with what distroless
#     static:nonroot provides (passwd/group with nonroot 65532, CA bundle, /tmp);
#   - modules are vendored from the host's module cache into a temporary build
#     context, so the build inside the container needs no network;
#   - the image's binary must answer `version` as uid/gid 65532 under `buildah run`.
#
# Base images are kept in a dedicated buildah store between runs (keyed by the
# host's Go version), so only the first run pays for them. Everything else
# (context, containers, the product image unless KEEP_IMAGE=1) is removed.
#
# Environment:
#   TOKENPROXY_IMAGE_STORE     buildah storage root (default /var/tmp/tokenproxy-ci/buildah)
#   TOKENPROXY_IMAGE           product image name   (default localhost/tokenproxy:ci)
#   TOKENPROXY_VERSION         version to stamp     (default `git describe --tags --dirty`, else dev)
#   TOKENPROXY_KEEP_IMAGE=1    keep the product image in the store after the checks
#   TOKENPROXY_REBUILD_BASE=1  rebuild the local base images even if present
set -euo pipefail

start=$(date +%s.%N)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
store=${TOKENPROXY_IMAGE_STORE:-/var/tmp/tokenproxy-ci/buildah}
image=${TOKENPROXY_IMAGE:-localhost/tokenproxy:ci}
uid=65532

log() { printf 'image.sh: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
elapsed() { awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

if ! command -v buildah >/dev/null 2>&1; then
    log "installing buildah"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq buildah >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq buildah >/dev/null
    fi
fi
command -v go >/dev/null 2>&1 || die "go is not on PATH"

goroot=$(go env GOROOT)
gover=$(go env GOVERSION)
goarch=$(go env GOARCH)
commit=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || true)
version=${TOKENPROXY_VERSION:-$(git -C "$repo" describe --tags --dirty 2>/dev/null || echo dev)}

bh() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }

# The store is ours alone: working containers left by an interrupted run go.
bh rm --all >/dev/null 2>&1 || true

work=$(mktemp -d /var/tmp/tokenproxy-image.XXXXXX)
containers=()
cleanup() {
    local c
    for c in "${containers[@]}"; do bh rm "$c" >/dev/null 2>&1 || true; done
    if [[ ${TOKENPROXY_KEEP_IMAGE:-0} != 1 ]]; then bh rmi -f "$image" >/dev/null 2>&1 || true; fi
    # Dangling layers of earlier builds of the product image.
    bh rmi --prune >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# copy_with_libs SRC ROOTFS: copies an executable and the shared libraries it loads.
copy_with_libs() {
    local bin=$1 root=$2 lib
    install -D -m 0755 "$(readlink -f "$bin")" "$root$bin"
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

base_image() { # name label-value
    local ref=$1 want=$2 have
    [[ ${TOKENPROXY_REBUILD_BASE:-0} == 1 ]] && return 1
    have=$(bh inspect --type image --format '{{index .ImageAnnotations "io.tokenproxy.ci.base"}}' "$ref" 2>/dev/null) || return 1
    [[ $have == "$want" ]]
}

# --- builder base: scratch + host Go toolchain + /bin/sh --------------------
builder=localhost/tokenproxy-ci/builder:$gover
builder_key="$gover $goroot $(stat -c %Y "$goroot/VERSION" 2>/dev/null || echo 0)"
if base_image "$builder" "$builder_key"; then
    log "builder base $builder: cached"
else
    log "builder base $builder: creating from scratch + $goroot"
    # Builders for other Go versions are of no further use.
    bh images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep '^localhost/tokenproxy-ci/builder:' |
        while read -r old; do bh rmi -f "$old" >/dev/null 2>&1 || true; done || true
    t=$(date +%s)
    c=$(bh from --quiet scratch); containers+=("$c")
    root=$(bh mount "$c")
    mkdir -p "$root/usr/local" "$root/tmp" "$root/root" "$root/go" "$root/etc/ssl/certs" "$root/bin" "$root/usr/bin"
    chmod 1777 "$root/tmp"
    # The toolchain without its own tests, test data and API lists.
    tar -C "$goroot/.." -cf - --exclude="$(basename "$goroot")/test" --exclude="$(basename "$goroot")/api" \
        --exclude=testdata --exclude='*_test.go' "$(basename "$goroot")" | tar -C "$root/usr/local" -xf -
    if [[ $(basename "$goroot") != go ]]; then mv "$root/usr/local/$(basename "$goroot")" "$root/usr/local/go"; fi
    copy_with_libs /bin/sh "$root"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
    bh umount "$c" >/dev/null
    bh config --env PATH=/usr/local/go/bin:/usr/bin:/bin --env HOME=/root --env GOPATH=/go \
        --env GOTOOLCHAIN=local --workingdir / --annotation "io.tokenproxy.ci.base=$builder_key" "$c"
    bh commit --quiet --rm "$c" "$builder" >/dev/null
    containers=("${containers[@]/$c}")
    log "builder base: $(( $(date +%s) - t ))s"
fi

# --- runtime base: scratch + what distroless static:nonroot provides ---------
runtime=localhost/tokenproxy-ci/runtime:static-nonroot
runtime_key="v1 $(sha256sum /etc/ssl/certs/ca-certificates.crt | cut -c1-16)"
if base_image "$runtime" "$runtime_key"; then
    log "runtime base $runtime: cached"
else
    log "runtime base $runtime: creating from scratch"
    c=$(bh from --quiet scratch); containers+=("$c")
    root=$(bh mount "$c")
    mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot" "$root/root"
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/root" "$root/home/nonroot"
    chown "$uid:$uid" "$root/home/nonroot"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:$uid:$uid:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$root/etc/group" <<EOF
root:x:0:
nobody:x:65534:
nonroot:x:$uid:
EOF
    printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
    bh umount "$c" >/dev/null
    bh config --user "$uid:$uid" --workingdir /home/nonroot \
        --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        --annotation "io.tokenproxy.ci.base=$runtime_key" "$c"
    bh commit --quiet --rm "$c" "$runtime" >/dev/null
    containers=("${containers[@]/$c}")
fi
log "base images ready at $(elapsed)s"

# --- build context: tracked and untracked-but-not-ignored files + vendor/ ----
ctx=$work/context
mkdir -p "$ctx"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$repo" ls-files -z --cached --others --exclude-standard |
        (cd "$repo" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
        tar -C "$repo" --null -T - -cf - | tar -C "$ctx" -xf -
else
    tar -C "$repo" --exclude=.git -cf - . | tar -C "$ctx" -xf -
fi
rm -rf "$ctx/vendor"
(cd "$repo" && go mod vendor -o "$ctx/vendor")
log "context ready at $(elapsed)s ($(du -sh "$ctx" | cut -f1), vendor $(du -sh "$ctx/vendor" | cut -f1))"

# --- build -------------------------------------------------------------------
t=$(date +%s.%N)
if ! bh bud --isolation chroot --pull=never --layers=false \
    --build-arg BUILDER_IMAGE="$builder" \
    --build-arg RUNTIME_IMAGE="$runtime" \
    --build-arg VERSION="$version" \
    --build-arg COMMIT="$commit" \
    --build-arg GOPROXY=off \
    --build-arg GOFLAGS=-mod=vendor \
    --build-arg TARGETARCH="$goarch" \
    -f "$ctx/Dockerfile" -t "$image" "$ctx" >"$work/bud.log" 2>&1; then
    cat "$work/bud.log" >&2
    die "buildah bud failed"
fi
log "bud: $(awk -v s="$t" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')s"

# --- checks ------------------------------------------------------------------
user=$(bh inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
[[ $user == "$uid:$uid" ]] || die "image USER is '$user', want $uid:$uid"
entry=$(bh inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "$image")
[[ $entry == '[/usr/local/bin/tokenproxy]' ]] || die "image ENTRYPOINT is $entry"

# A static probe, bind-mounted into the container, reports the uid/gid the
# image's processes get; the image itself has no shell or id(1).
mkdir -p "$work/probe"
cat >"$work/probe/main.go" <<'EOF'
package main

import (
	"fmt"
	"os"
)

func main() { fmt.Printf("%d:%d %d:%d\n", os.Getuid(), os.Getgid(), os.Geteuid(), os.Getegid()) }
EOF
(cd "$work/probe" && printf 'module probe\n\ngo 1.22\n' >go.mod && CGO_ENABLED=0 GOFLAGS= go build -o probe .)

c=$(bh from --quiet --pull=never "$image"); containers+=("$c")
ids=$(bh run --isolation chroot -v "$work/probe/probe:/probe:ro" "$c" -- /probe)
[[ $ids == "$uid:$uid $uid:$uid" ]] || die "processes run as '$ids', want $uid:$uid"
out=$(bh run --isolation chroot "$c" -- /usr/local/bin/tokenproxy version)
want="tokenproxy $version${commit:+ ($commit)}"
[[ $out == "$want" ]] || die "version printed '$out', want '$want'"
log "ok: $image runs as $ids and prints '$out'"
log "total: $(elapsed)s"
