#!/usr/bin/env bash
# Provisions a newer Erlang/OTP (27, from Debian 13 "trixie") for the test nodes, on Debian 12.
#
#   bash .ci/otp27.sh            # root in /opt/otp27 (or $PZ_OTP27_ROOT); idempotent
#   PZ_ERL=$PWD/.ci/otp27-erl python3 -m pytest tests/test_node.py ...
#
# Trixie's erlang packages need trixie's C library, so they live in their own root: a minimal
# Debian (mmdebstrap's "essential" variant plus erlang-base, erlang-mnesia, erlang-crypto)
# made from Debian's own archive. .ci/otp27-erl runs `erl` inside it with chroot: the nodes
# share this machine's network (EPMD on loopback, distribution ports), /tmp and hostname.
# A finished root is marked with a stamp file naming its suite and packages; an unfinished
# one, or one made from another list, is removed and made again.
set -euo pipefail

ROOT=${PZ_OTP27_ROOT:-/opt/otp27}
SUITE=${PZ_OTP27_SUITE:-trixie}
MIRROR=${PZ_OTP27_MIRROR:-http://deb.debian.org/debian}
# erlang-ssl: the TLS distribution tests run on OTP 27 too
PACKAGES=erlang-base,erlang-mnesia,erlang-crypto,erlang-ssl
STAMP=$ROOT/.pz-otp-root
WRAPPER=$(cd "$(dirname "$0")" && pwd)/otp27-erl
export DEBIAN_FRONTEND=noninteractive

otp_release() {
  PZ_OTP27_ROOT=$ROOT "$WRAPPER" -noshell -eval \
    'io:format("~s~n", [erlang:system_info(otp_release)]), halt().'
}

if [[ -f $STAMP ]] && grep -qxF "suite $SUITE" "$STAMP" && grep -qxF "packages $PACKAGES" "$STAMP"; then
  echo "OTP $(otp_release) already in $ROOT ($SUITE)"
  exit 0
fi

start=$(date +%s)
if ! command -v mmdebstrap >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

remove_root() {
  # Left by an interrupted run. Never delete through a mount (the wrapper's are private to
  # each node, so none should be visible here).
  if grep -qF -e " $ROOT/" -e " $ROOT " /proc/self/mountinfo; then
    echo "otp27.sh: something is mounted under $ROOT; not removing it" >&2
    exit 1
  fi
  rm -rf "$ROOT"
}

make_root() {
  # No manuals, translations or docs (copyright files stay): ~30 MB less, nothing Erlang needs.
  mmdebstrap --mode=root --variant=essential --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --quiet "$SUITE" "$ROOT" "$MIRROR"
}

[[ -e $ROOT ]] && remove_root
mkdir -p "$(dirname "$ROOT")"
# A second try for a download cut short; anything else fails the same way twice.
if ! make_root; then
  echo "otp27.sh: mmdebstrap failed; trying once more" >&2
  remove_root
  make_root
fi

# Mount points the wrapper binds over, created once here so it never writes into the root.
mkdir -p "$ROOT/proc" "$ROOT/dev" "$ROOT/sys" "$ROOT/tmp"
touch "$ROOT/etc/hosts"

release=$(otp_release)
[[ $release =~ ^[0-9]+$ ]] || { echo "otp27.sh: erl in $ROOT does not run: $release" >&2; exit 1; }
printf 'OTP %s\nsuite %s\npackages %s\n' "$release" "$SUITE" "$PACKAGES" >"$STAMP"
echo "OTP $release from $SUITE in $ROOT: $(du -sh "$ROOT" | cut -f1), $(($(date +%s) - start)) s"
