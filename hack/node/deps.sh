#!/usr/bin/env bash
# Install the Debian packages the real-node dev cluster needs (`make
# cluster-up NODE=real` and `make test` run this; needs root and apt). On other
# distributions install the same tools by hand (see README, prerequisites).
#
#   runc                           the OCI runtime under containerd (crun fails on
#                                  cgroup v1 hybrid layouts)
#   containernetworking-plugins    bridge, host-local, loopback CNI plugins
#   umoci, busybox-static, gcc     the pause and busybox test images, made locally
#   buildah, debootstrap           the operator image from the Dockerfile, on a local
#                                  Debian base (no registry can be pulled from here)
#   iproute2, util-linux           ip link (bridge teardown), mount/umount, flock
set -euo pipefail

PACKAGES=(runc containernetworking-plugins umoci busybox-static gcc libc6-dev buildah
  debootstrap iproute2 util-linux ca-certificates)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "node-deps: the real-node cluster needs these Debian packages: ${missing[*]}" >&2
  echo "node-deps: install them as root (apt-get install ${missing[*]}) and run again" >&2
  exit 1
fi
echo "node-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
