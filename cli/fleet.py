"""The ssh hosts' lines under `conjure machines`: each host, its type and state, and for
a host that cannot serve (unreachable, refused key, no Docker) the one-line reason."""

from __future__ import annotations

from conjure.infra.config import Settings


def ssh_host_lines(settings: Settings) -> list[str]:
    if not settings.ssh_hosts:
        return []
    from conjure.infra.providers import ssh

    rows = ssh.host_report(settings)
    width = max(len("SSH HOST"), *(len(r["host"]) for r in rows))
    lines = [f"{'SSH HOST':<{width}} {'TYPE':<8} STATE"]
    for r in rows:
        lines.append(f"{r['host']:<{width}} {r['machine_type']:<8} {r['line']}")
    return lines
