#!/usr/bin/env bash
# Resolve the upstream binaries of the local control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, etcd, kwok, kwokctl, helm,
# promtool, and kstatus: a tiny command of ours around sigs.k8s.io/cli-utils)
# and print the directory that holds them, one symlink per binary.
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
# Builds need Go (see README); the first one takes several minutes per module.
set -euo pipefail

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
# never mistaken for a finished one) and print that directory.
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
  (cd "$ROOT/hack/tools/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "${pkgs[@]}")
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
  touch "$tmp/.complete"
  rm -rf "$out"
  mv "$tmp" "$out"
  log "built $dir $version in $((SECONDS - started))s"
  printf '%s\n' "$out"
}

k8s_dir() {
  local v minor
  v=$(modver kubernetes k8s.io/kubernetes)
  minor=${v#v1.}
  minor=${minor%%.*}
  local ld="" key
  for key in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $key.gitVersion=$v -X $key.gitMajor=1 -X $key.gitMinor=$minor"
  done
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ld+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  build kubernetes "$v" "$ld" \
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
  local v
  v=$(modver helm helm.sh/helm/v3)
  build helm "$v" "-X helm.sh/helm/v3/internal/version.version=$v" helm:helm.sh/helm/v3/cmd/helm
}

prometheus_dir() {
  local v
  v=$(modver prometheus github.com/prometheus/prometheus)
  build prometheus "$v" "-X github.com/prometheus/common/version.Version=$v" \
    promtool:github.com/prometheus/prometheus/cmd/promtool
}

kstatus_dir() {
  local v
  v=$(modver kstatus sigs.k8s.io/cli-utils)
  # Keyed by our main.go too, so a change to it rebuilds.
  v="$v-$(sha1sum "$ROOT/hack/tools/kstatus/main.go" | cut -c1-8)"
  build kstatus "$v" "" kstatus:patchwarden.io/hack/tools/kstatus
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
  local name group
  for entry in kube-apiserver:k8s kube-controller-manager:k8s kube-scheduler:k8s kubectl:k8s \
    etcd:etcd kwok:kwok kwokctl:kwok helm:helm promtool:prometheus kstatus:kstatus; do
    name=${entry%%:*}
    group=${entry#*:}
    ln -sfn "$(resolve "$name" "$group")" "$LINKS/$name"
  done
  printf '%s\n' "$LINKS"
}

main "$@"
