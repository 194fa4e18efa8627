#!/usr/bin/env bash
# Resolve the upstream binaries of the local control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, etcd, kwok, kwokctl, helm,
# promtool, the Prometheus server (alert-gate tests), and kstatus: a tiny command
# of ours around sigs.k8s.io/cli-utils) and print the directory that holds them, one symlink per binary.
#
# Lookup order for each binary:
#   1. TEST_ASSET_<NAME> (e.g. TEST_ASSET_KUBE_APISERVER, TEST_ASSET_ETCD),
#      the per-binary convention of controller-runtime's envtest;
#   2. $KUBEBUILDER_ASSETS/<name> (envtest's directory convention);
#   3. the cache, ${PATCHWARDEN_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/patchwarden},
#      keyed by the upstream version and this script's build recipe;
#   4. a build from the wrapper Go modules in hack/tools/*/ (their go.mod and
#      go.sum pin every version), stored in the cache for the next run.
#
# `hack/tools.sh node` resolves, in the same way and into the same directory,
# what the real-node dev cluster needs on top: kubelet, containerd (+ ctr and
# the runc shim), the CSI hostpath driver and node-driver-registrar (built from
# the source archives in ../shared/mirror/ or from PATCHWARDEN_CSI_SRC_DIR, see
# csi_src), csi-provisioner, csi-snapshotter and snapshot-controller, and the
# upstream VolumeSnapshot CRDs (snapshot-crds/, a directory).
#
# Builds need Go (see README); the first one takes several minutes per module.
set -euo pipefail
shopt -s inherit_errexit # a failed build inside $(…) stops the script too

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${PATCHWARDEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/patchwarden}
LINKS=$ROOT/.tools/bin
# Bump when the way binaries are built changes, so stale caches are not reused.
RECIPE=1

export GOTOOLCHAIN=local GOFLAGS=-mod=readonly

log() { printf 'tools: %s\n' "$*" >&2; }

# modver DIR MODULE: the version of MODULE that hack/tools/DIR/go.mod requires.
modver() {
  awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) { print ($1 == "require" ? $3 : $2); exit }' \
    "$ROOT/hack/tools/$1/go.mod"
}

# build DIR VERSION LDFLAGS BIN:PKG...: build packages of a wrapper module into
# the cache directory DIR-VERSION-rRECIPE (atomically: a half-built directory is
# never mistaken for a finished one) and print that directory. BUILD_TAGS and
# BUILD_CGO (0/1) in the environment pass -tags and CGO_ENABLED; BUILD_SRC
# builds from that source tree (with its vendor/) instead of hack/tools/DIR;
# BUILD_AFTER is a function run with the half-built directory (extra files);
# BUILD_MODULE names the wrapper module when it is not hack/tools/DIR.
build() {
  local dir=$1 version=$2 ldflags=$3
  shift 3
  local out="$CACHE/$dir-$version-r$RECIPE"
  if [[ -f "$out/.complete" ]]; then
    printf '%s\n' "$out"
    return
  fi
  command -v go >/dev/null || { log "Go is needed to build $dir $version (see README)"; exit 1; }
  mkdir -p "$CACHE"
  local tmp
  tmp=$(mktemp -d "$CACHE/.build-$dir.XXXXXX")
  local started=$SECONDS pkgs=() spec
  for spec in "$@"; do pkgs+=("${spec#*:}"); done
  log "building $dir $version (${pkgs[*]##*/}) into $out; the first build takes minutes"
  local src=$ROOT/hack/tools/${BUILD_MODULE:-$dir} goflags=-mod=readonly proxy
  proxy=$(go env GOPROXY)
  if [[ -n ${BUILD_SRC:-} ]]; then # an upstream tree with its vendor/: offline
    src=$BUILD_SRC goflags=-mod=vendor proxy=off
  fi
  (cd "$src" && CGO_ENABLED=${BUILD_CGO:-$(go env CGO_ENABLED)} GOFLAGS=$goflags GOPROXY=$proxy \
    go build -trimpath -tags "${BUILD_TAGS:-}" -ldflags "-s -w $ldflags" -o "$tmp/" "${pkgs[@]}") ||
    { rm -rf "$tmp"; log "building $dir $version failed"; exit 1; }
  # go build names a binary after its package path (the element before a /vN
  # suffix); rename where that differs from the name we want.
  local bin pkg default
  for spec in "$@"; do
    bin=${spec%%:*}
    pkg=${spec#*:}
    default=${pkg##*/}
    [[ $default =~ ^v[0-9]+$ ]] && default=$(basename "$(dirname "$pkg")")
    [[ $default == "$bin" ]] || mv "$tmp/$default" "$tmp/$bin"
  done
  [[ -z ${BUILD_AFTER:-} ]] || "$BUILD_AFTER" "$tmp"
  touch "$tmp/.complete"
  rm -rf "$out"
  mv "$tmp" "$out"
  log "built $dir $version in $((SECONDS - started))s"
  printf '%s\n' "$out"
}

# k8s_ldflags VERSION: the version stamps of Kubernetes' own build.
k8s_ldflags() {
  local v=$1 minor
  minor=${v#v1.}
  minor=${minor%%.*}
  local ld="" key
  for key in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $key.gitVersion=$v -X $key.gitMajor=1 -X $key.gitMinor=$minor"
  done
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ld+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  printf '%s\n' "$ld"
}

k8s_dir() {
  local v
  v=$(modver kubernetes k8s.io/kubernetes)
  build kubernetes "$v" "$(k8s_ldflags "$v")" \
    kube-apiserver:k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager:k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-scheduler:k8s.io/kubernetes/cmd/kube-scheduler \
    kubectl:k8s.io/kubernetes/cmd/kubectl
}

etcd_dir() {
  local v
  v=$(modver etcd go.etcd.io/etcd/server/v3)
  build etcd "$v" "" etcd:go.etcd.io/etcd/server/v3
}

kwok_dir() {
  local v
  v=$(modver kwok sigs.k8s.io/kwok)
  build kwok "$v" "" \
    kwok:sigs.k8s.io/kwok/cmd/kwok kwokctl:sigs.k8s.io/kwok/cmd/kwokctl
}

helm_dir() {
  local v kv ld
  v=$(modver helm helm.sh/helm/v3)
  # As helm's own Makefile: stamp the Kubernetes version of its client-go
  # (v0.34.x is Kubernetes 1.34), which `helm template` assumes without
  # --kube-version (unstamped, it assumes 1.20 and refuses kubeVersion: >=1.29).
  kv=$(modver helm k8s.io/client-go)
  kv=${kv#v0.}
  kv=${kv%%.*}
  ld="-X helm.sh/helm/v3/internal/version.version=$v"
  for pkg in chartutil lint/rules; do
    ld+=" -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMinor=$kv"
  done
  build helm "$v-k$kv" "$ld" helm:helm.sh/helm/v3/cmd/helm
}

prometheus_dir() {
  local v
  v=$(modver prometheus github.com/prometheus/prometheus)
  # "+server": the server joined promtool in this directory (an older cache held promtool only).
  build prometheus "$v+server" "-X github.com/prometheus/common/version.Version=${v#v}" \
    promtool:github.com/prometheus/prometheus/cmd/promtool \
    prometheus:github.com/prometheus/prometheus/cmd/prometheus
}

kstatus_dir() {
  local v
  v=$(modver kstatus sigs.k8s.io/cli-utils)
  # Keyed by our main.go too, so a change to it rebuilds.
  v="$v-$(sha1sum "$ROOT/hack/tools/kstatus/main.go" | cut -c1-8)"
  build kstatus "$v" "" kstatus:patchwarden.io/hack/tools/kstatus
}

# ---- the real-node profile (`hack/tools.sh node`) ----------------------------

kubelet_dir() {
  local v
  v=$(modver kubernetes k8s.io/kubernetes)
  BUILD_MODULE=kubernetes build kubelet "$v" "$(k8s_ldflags "$v")" \
    kubelet:k8s.io/kubernetes/cmd/kubelet
}

containerd_dir() {
  local v
  v=$(modver containerd github.com/containerd/containerd/v2)
  # Static (no cgo), without the btrfs snapshotter (it needs C headers).
  BUILD_TAGS=no_btrfs BUILD_CGO=0 build containerd "$v" \
    "-X github.com/containerd/containerd/v2/version.Version=$v" \
    containerd:github.com/containerd/containerd/v2/cmd/containerd \
    ctr:github.com/containerd/containerd/v2/cmd/ctr \
    containerd-shim-runc-v2:github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
}

provisioner_dir() {
  local v
  v=$(modver csi-provisioner github.com/kubernetes-csi/external-provisioner/v6)
  build csi-provisioner "$v" "-X main.version=$v" \
    csi-provisioner:github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
}

copy_snapshot_crds() {
  local crds
  crds=$(cd "$ROOT/hack/tools/csi-snapshotter" &&
    go list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8)/config/crd
  mkdir -p "$1/snapshot-crds"
  # The VolumeGroupSnapshot CRDs too (backup.consistency: Group): the sidecars look for them
  # once, at their start (../shared/notes/group-snapshots.md).
  cp "$crds"/snapshot.storage.k8s.io_*.yaml "$crds"/groupsnapshot.storage.k8s.io_*.yaml \
    "$1/snapshot-crds/"
  chmod -R u+w "$1/snapshot-crds"
}

snapshotter_dir() {
  local v
  v=$(modver csi-snapshotter github.com/kubernetes-csi/external-snapshotter/v8)
  # Recipe 2: the group snapshot CRDs beside the others.
  RECIPE=2 BUILD_AFTER=copy_snapshot_crds build csi-snapshotter "$v" "-X main.version=$v" \
    csi-snapshotter:github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter \
    snapshot-controller:github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller
}

# csi_src NAME TAG: a source tree of NAME at TAG (these two are not served by
# the module proxy here): the archive NAME-TAG.tar.gz in ../shared/mirror/
# (PATCHWARDEN_MIRROR_DIR), unpacked once into the cache; else
# $PATCHWARDEN_CSI_SRC_DIR/NAME (e.g. `git clone --branch TAG` of the project).
csi_src() {
  local name=$1 tag=$2
  local mirror=${PATCHWARDEN_MIRROR_DIR:-$ROOT/../shared/mirror}
  local archive="$mirror/$name-$tag.tar.gz" tree="$CACHE/src/$name-$tag"
  if [[ -f "$tree/.complete" ]]; then
    printf '%s\n' "$tree"
  elif [[ -f "$archive" ]]; then
    mkdir -p "$CACHE/src"
    local tmp
    tmp=$(mktemp -d "$CACHE/src/.unpack-$name.XXXXXX")
    tar xzf "$archive" -C "$tmp" --strip-components=1
    touch "$tmp/.complete"
    rm -rf "$tree"
    mv "$tmp" "$tree"
    printf '%s\n' "$tree"
  elif [[ -n ${PATCHWARDEN_CSI_SRC_DIR:-} && -d "$PATCHWARDEN_CSI_SRC_DIR/$name/vendor" ]]; then
    printf '%s\n' "$PATCHWARDEN_CSI_SRC_DIR/$name"
  else
    log "the source of $name $tag is needed for the real-node cluster and was not found:"
    log "  neither $archive"
    log "  nor \$PATCHWARDEN_CSI_SRC_DIR/$name with its vendor/ (PATCHWARDEN_CSI_SRC_DIR=${PATCHWARDEN_CSI_SRC_DIR:-unset});"
    log "  get it with: git clone --branch $tag https://github.com/kubernetes-csi/$name"
    exit 1
  fi
}

HOSTPATH_TAG=v1.18.0
REGISTRAR_TAG=v2.17.0

hostpath_dir() {
  BUILD_SRC=$(csi_src csi-driver-host-path "$HOSTPATH_TAG") build hostpath "$HOSTPATH_TAG" \
    "-X main.version=$HOSTPATH_TAG" hostpathplugin:./cmd/hostpathplugin
}

registrar_dir() {
  BUILD_SRC=$(csi_src node-driver-registrar "$REGISTRAR_TAG") build registrar "$REGISTRAR_TAG" \
    "-X main.version=$REGISTRAR_TAG" csi-node-driver-registrar:./cmd/csi-node-driver-registrar
}

# resolve NAME GROUP: print the path of binary NAME, building GROUP if needed.
resolve() {
  local name=$1 group=$2
  local var="TEST_ASSET_$(tr 'a-z-' 'A-Z_' <<<"$name")"
  if [[ -n "${!var:-}" ]]; then
    [[ -x "${!var}" ]] || { log "$var=${!var} is not an executable file"; exit 1; }
    printf '%s\n' "${!var}"
  elif [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$name" ]]; then
    printf '%s\n' "$KUBEBUILDER_ASSETS/$name"
  else
    printf '%s/%s\n' "$("${group}_dir")" "$name"
  fi
}

main() {
  mkdir -p "$LINKS"
  exec 9>"$ROOT/.tools/.lock"
  flock 9
  local name group entries=(kube-apiserver:k8s kube-controller-manager:k8s kube-scheduler:k8s
    kubectl:k8s etcd:etcd kwok:kwok kwokctl:kwok helm:helm promtool:prometheus
    prometheus:prometheus kstatus:kstatus)
  if [[ ${1:-} == node ]]; then
    entries+=(kubelet:kubelet containerd:containerd ctr:containerd
      containerd-shim-runc-v2:containerd csi-provisioner:provisioner
      csi-snapshotter:snapshotter snapshot-controller:snapshotter snapshot-crds:snapshotter
      hostpathplugin:hostpath csi-node-driver-registrar:registrar)
  elif [[ -n ${1:-} ]]; then
    log "usage: hack/tools.sh [node]"
    exit 2
  fi
  for entry in "${entries[@]}"; do
    name=${entry%%:*}
    group=${entry#*:}
    ln -sfn "$(resolve "$name" "$group")" "$LINKS/$name"
  done
  printf '%s\n' "$LINKS"
}

main "$@"
