#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages the build and the tests need, only when missing,
# so a fresh machine needs nothing by hand and a prepared one pays nothing.
set -euo pipefail
packages=(make gcc clang pkg-config liburing-dev qemu-utils perl time libnbd-bin fio nbdkit python3 man-db groff-base g++ libclang-rt-14-dev valgrind libgnutls28-dev gnutls-bin libfuse3-dev fuse3 libnbd-dev libcurl4-gnutls-dev nginx-light qemu-block-extra e2fsprogs util-linux python3-dev python3-setuptools python3-pytest build-essential dpkg-dev debhelper dh-python python3-all-dev lintian fakeroot)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Packages with a service (nginx) must not start it: the tests start their
# own servers, on loopback only.  policy-rc.d tells invoke-rc.d not to.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
