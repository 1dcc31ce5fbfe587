#!/bin/bash
# Conjure machine ${machine_id} (${machine_type}): install Docker and the worker agent,
# and run the agent as a systemd service polling this machine's Temporal task queue.
# Written by infra/providers/base.py:startup_script; runs once, as root, at first boot.
set -euo pipefail
exec > >(tee -a /var/log/conjure-startup.log) 2>&1
export DEBIAN_FRONTEND=noninteractive

if ! command -v docker >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends docker.io python3 python3-venv git ca-certificates
fi
systemctl enable --now docker

if [ "${gpus}" -gt 0 ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "conjure: ${machine_type} has ${gpus} GPU(s) but no NVIDIA driver: use a GPU-ready image" >&2
fi

python3 -m venv /opt/conjure
/opt/conjure/bin/pip install -q --upgrade pip
/opt/conjure/bin/pip install -q '${agent_package}'

install -d -m 700 /etc/conjure /etc/conjure/tls
install -d /var/lib/conjure
[ -n "${tls_ca_b64}" ] && echo "${tls_ca_b64}" | base64 -d > /etc/conjure/tls/ca.pem
[ -n "${tls_cert_b64}" ] && echo "${tls_cert_b64}" | base64 -d > /etc/conjure/tls/cert.pem
[ -n "${tls_key_b64}" ] && echo "${tls_key_b64}" | base64 -d > /etc/conjure/tls/key.pem
cat > /etc/conjure/agent.env <<'CONJURE_ENV'
${agent_env}
CONJURE_ENV
chmod 600 /etc/conjure/agent.env

cat > /etc/systemd/system/conjure-agent.service <<'CONJURE_UNIT'
[Unit]
Description=Conjure worker agent (machine ${machine_id})
After=docker.service network-online.target
Wants=network-online.target
Requires=docker.service

[Service]
EnvironmentFile=/etc/conjure/agent.env
ExecStart=/opt/conjure/bin/conjure agent --machine-id ${machine_id}
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
CONJURE_UNIT

systemctl daemon-reload
systemctl enable --now conjure-agent
echo "conjure: agent for ${machine_id} started"
