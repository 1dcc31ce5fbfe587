#!/usr/bin/env bash
# Take a fresh Debian/Ubuntu machine from a clone of Conjure to ready:
#   system packages, a running Docker engine, .venv with Conjure installed, the base image.
# Safe to repeat: every step is skipped when already done.
#
# Environment:
#   CONJURE_EXTRAS   extras to install, e.g. "test,aws" (default: none)
#   PYTHON           interpreter used to create .venv (default: python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"

EXTRAS="${CONJURE_EXTRAS:-}"
PYTHON="${PYTHON:-python3}"
DOCKERD_LOG=/var/log/conjure-dockerd.log

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  die "run as root, or install sudo"
fi
as_root() { "${SUDO[@]}" "$@"; }

# 1. System packages ----------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

want=(python3 python3-venv git debootstrap ca-certificates procps)
# Any Docker engine will do (docker.io, docker-ce, a remote DOCKER_HOST); docker.io otherwise.
if ! command -v dockerd >/dev/null 2>&1 && ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }; then
  want+=(docker.io)
fi
missing=()
for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
# debootstrap checks Debian's Release signatures with this keyring (not preinstalled on Ubuntu).
if ! installed debian-archive-keyring && [ ! -e /usr/share/keyrings/debian-archive-keyring.gpg ]; then
  missing+=(debian-archive-keyring)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} yourself"
  say "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    # The keyring is optional on non-Debian systems (debootstrap then warns and goes on).
    rest=()
    for p in "${missing[@]}"; do [ "$p" = debian-archive-keyring ] || rest+=("$p"); done
    [ "${#rest[@]}" -eq "${#missing[@]}" ] && die "apt-get install failed"
    say "retrying without debian-archive-keyring"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${rest[@]}" \
      || die "apt-get install failed"
  fi
else
  say "system packages present"
fi

# 2. Docker engine ---------------------------------------------------------------------
docker_up() { as_root docker info >/dev/null 2>&1; }
wait_docker() {
  for _ in $(seq 1 30); do docker_up && return 0; sleep 1; done
  return 1
}

if docker_up; then
  say "docker engine running"
else
  started=""
  if [ "$(cat /proc/1/comm 2>/dev/null || true)" = systemd ] && command -v systemctl >/dev/null 2>&1; then
    say "starting docker with systemctl"
    if as_root systemctl start docker >/dev/null 2>&1 && wait_docker; then
      started=systemd
    else
      # Typically the default bridge cannot be created here: run our own engine without one.
      say "systemctl start docker failed; starting dockerd without a bridge instead"
      as_root systemctl stop docker.service docker.socket >/dev/null 2>&1 || true
    fi
  fi
  if [ -z "$started" ]; then
    command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || die "dockerd not found"
    say "starting dockerd (log: $DOCKERD_LOG)"
    as_root sh -c "PATH=\"\$PATH:/usr/sbin:/sbin\"; setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false >>$DOCKERD_LOG 2>&1 </dev/null &"
    wait_docker || die "dockerd did not answer within 30s; see $DOCKERD_LOG"
  fi
  say "docker engine running"
fi
if [ "$(id -u)" -ne 0 ] && ! docker info >/dev/null 2>&1; then
  say "note: $(id -un) cannot use docker without sudo; add yourself to the docker group (sudo usermod -aG docker $(id -un)) and log in again"
fi

# 3. Python environment ----------------------------------------------------------------
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
  say "creating .venv with $PYTHON"
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi

target="."
[ -n "$EXTRAS" ] && target=".[${EXTRAS}]"
# Reinstall only when pyproject.toml changed or an extra is asked for that is not installed.
stamp_file=.venv/.conjure-install
hash="$(sha256sum pyproject.toml | cut -d' ' -f1)"
up_to_date() {
  local old_hash old_extras e
  [ -f "$stamp_file" ] || return 1
  read -r old_hash old_extras <"$stamp_file" || true
  [ "$old_hash" = "$hash" ] || return 1
  for e in ${EXTRAS//,/ }; do
    case ",${old_extras}," in *",${e},"*) ;; *) return 1 ;; esac
  done
  .venv/bin/python -c 'import conjure.infra.base_image' >/dev/null 2>&1
}
if up_to_date; then
  say "conjure already installed in .venv (${target})"
else
  # Keep the extras installed before: pip install -e only ever adds.
  if [ -f "$stamp_file" ]; then
    read -r _ old_extras <"$stamp_file" || true
    for e in ${old_extras//,/ }; do
      [[ "$e" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || continue
      case ",${EXTRAS}," in *",${e},"*) ;; *) EXTRAS="${EXTRAS:+${EXTRAS},}${e}" ;; esac
    done
    target="."
    [ -n "$EXTRAS" ] && target=".[${EXTRAS}]"
  fi
  # An old pip (23.x, as venv bundles it) gives up on the boto3/aiobotocore pins of the aws extra.
  say "upgrading pip in .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  say "pip install -e '${target}'"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$target"
  printf '%s %s\n' "$hash" "$EXTRAS" >"$stamp_file"
fi

# 4. Base image ------------------------------------------------------------------------
# debootstrap needs root; pass CONJURE_* settings through sudo.
say "ensuring the base image"
conjure_env=()
while IFS= read -r line; do conjure_env+=("$line"); done < <(env | grep '^CONJURE_' || true)
as_root env "${conjure_env[@]}" "$REPO/.venv/bin/python" -m conjure.infra.base_image

say "ready: activate with 'source .venv/bin/activate'"
