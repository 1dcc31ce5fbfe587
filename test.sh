#!/usr/bin/env bash
# Install Conjure with its test extras and run the test suite against real components.
# Arguments are passed to pytest (e.g. ./test.sh tests/infra/test_base_image.py -x).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"

CONJURE_EXTRAS=test,aws,gcp,azure ./install.sh

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# Object-store emulators for the store tests (S3: moto_server, GCS: gcp-storage-emulator).
# A second pip call on purpose: moto then keeps the boto3/botocore that s3fs's aiobotocore
# pins, where resolving it with the extras makes pip backtrack through every s3fs release.
.venv/bin/pip install -q 'moto[server]>=5' 'gcp-storage-emulator>=2024.8'

# The Azure Blob store tests start Azurite (npm); it only has to be installed.
if ! command -v azurite-blob >/dev/null 2>&1; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "==> installing nodejs and npm"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
  fi
  echo "==> installing azurite"
  "${SUDO[@]}" npm install -g --no-audit --no-fund azurite
fi

# The image-registry tests start their own Debian docker-registry; it only has to be installed.
if ! dpkg-query -W -f='${Status}' docker-registry 2>/dev/null | grep -q 'install ok installed'; then
  echo "==> installing docker-registry"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry
  # A systemd host starts the packaged service on :5000; the tests want the port for their own.
  if [ "$(cat /proc/1/comm 2>/dev/null || true)" = systemd ]; then
    "${SUDO[@]}" systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  fi
fi

# The console's browser tests drive Debian's chromium through Playwright (the pip package
# comes with the test extra; Playwright's own browser download is never used).
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing chromium"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi

# The fleet tests (marker `fleet`, tests/hosts.py) make hosts of network namespaces, each with
# its own sshd and Docker engine: they need sshd and ip, not a running ssh service.
if [ ! -x /usr/sbin/sshd ] || ! command -v ip >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
  echo "==> installing openssh-server, iproute2"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server iproute2 util-linux
  if [ "$(cat /proc/1/comm 2>/dev/null || true)" = systemd ]; then
    "${SUDO[@]}" systemctl disable --now ssh.service >/dev/null 2>&1 || true
  fi
fi

echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

# mypy checks the `conjure` package as installed; it cannot follow setuptools' editable
# finder, so a tree of links under .venv mirrors pyproject's package-dir mapping.
echo "==> mypy"
tree=.venv/typecheck/conjure
mkdir -p "$tree"
ln -sfn "$REPO/__init__.py" "$tree/__init__.py"
for d in workflows activities cli worker_agent infra; do ln -sfn "$REPO/$d" "$tree/$d"; done
MYPYPATH=.venv/typecheck .venv/bin/mypy -p conjure

echo "==> pytest"
rc=0
.venv/bin/python -m pytest -q -rs --durations=15 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
