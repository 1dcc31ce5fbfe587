"""A real embedded stack serving three test hosts (tests/hosts.py) over SSH, for the
fleet tests and bench/fleet_unplug.py.

The control side is a real embedded stack (Temporal dev server, control worker) whose
store is S3 (moto_server on this side's loopback): the hosts' agents reach Temporal and
the store only through the reverse forwards of their SSH tunnels. Machine type `fleet`
names the ssh provider; `cpu` stays local. Two more entries cannot serve: h0 with a key
it does not know (`fleet-badkey`), h0 on a port nothing listens on (`fleet-noport`).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import tomli_w
from temporalio.client import Client

from conjure.infra.config import Settings
from conjure.infra.providers import ssh
from conjure.infra.temporal import make_client
from conjure.workflows.models import RunState
from tests import emulators
from tests.cli.test_run_e2e import git
from tests.conftest import conjure, running_stack, stack_env
from tests.hosts import ROOT, Host, make_hosts


class Fleet:
    def __init__(self, settings: Settings, hosts: list[Host], endpoint: str) -> None:
        self.settings = settings
        self.hosts = hosts
        self.endpoint = endpoint
        self.s3 = boto3.client("s3", endpoint_url=endpoint, **_creds())

    def by_address(self, address: str) -> Host:
        return next(h for h in self.hosts if h.address == address)

    def host_of(self, machine_id: str) -> Host:
        for h in self.hosts:
            st = ssh.read_state(self.settings, _entry(self.settings, h))
            if st.machine_id == machine_id:
                return h
        raise AssertionError(f"no host holds {machine_id}")


def _creds() -> dict[str, str]:
    c = emulators.S3_CREDENTIALS
    return {
        "aws_access_key_id": c["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": c["AWS_SECRET_ACCESS_KEY"],
        "region_name": c["AWS_DEFAULT_REGION"],
    }


def _entry(settings: Settings, h: Host):  # type: ignore[no-untyped-def]
    return next(e for e in settings.ssh_hosts if e.host == h.address)


# The run container's own addresses (host network: the host's), by SIOCGIFADDR.
WHERE = """import fcntl, socket, struct
for _, name in socket.if_nameindex():
    if name != "lo":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        packed = struct.pack("256s", name.encode())
        print(socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, packed)[20:24]))
"""


def project(tmp: Path) -> Path:
    """A committed project with where.py (prints the container's addresses) and hello.txt."""
    proj = tmp / "proj"
    proj.mkdir(exist_ok=True)
    (proj / "hello.txt").write_text("hi\n")
    (proj / "where.py").write_text(WHERE)
    if not (proj / ".git").exists():
        git(proj, "init", "-q")
        git(proj, "add", ".")
        git(proj, "commit", "-q", "-m", "fleet")
    return proj


@contextmanager
def fleet_stack(work: Path, *, heartbeat: float, **extra_env: str) -> Iterator[Fleet]:
    """Three hosts, moto's S3 and a stack whose `fleet` machines are those hosts."""
    work.mkdir(parents=True, exist_ok=True)
    with make_hosts(3) as hosts, emulators.moto(work) as endpoint:
        boto3.client("s3", endpoint_url=endpoint, **_creds()).create_bucket(Bucket="store")
        home = work / "home"
        home.mkdir()
        # Two entries that cannot serve: h0 with a key it does not know, h0 on a port
        # nothing listens on (traffic stays between this host and the test hosts). Each entry
        # is a host of its own to Conjure (user@host:port).
        stranger = work / "stranger_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True
        )
        bad = [
            hosts[0].ssh_host_entry(
                machine_type="fleet-badkey", user="nobody", identity_file=str(stranger)
            ),
            hosts[0].ssh_host_entry(machine_type="fleet-noport", port=2222),
        ]
        one = {"vcpus": 1, "memory_gb": 1, "price_per_hour": 0.1, "provider": "ssh"}
        (home / "config.toml").write_text(
            tomli_w.dumps(
                {
                    "ssh_hosts": [h.ssh_host_entry(machine_type="fleet") for h in hosts] + bad,
                    "machine_types": {"fleet": one, "fleet-badkey": one, "fleet-noport": one},
                }
            )
        )
        env = stack_env(
            home,
            CONJURE_STORE_URL="s3://store/team",
            CONJURE_S3_ENDPOINT_URL=endpoint,
            CONJURE_IDLE_TIMEOUT_SECONDS="600",
            CONJURE_EXECUTE_HEARTBEAT_SECONDS=str(heartbeat),
            CONJURE_SSH_KEEPALIVE_SECONDS="2",
            CONJURE_RECONCILE_INTERVAL_SECONDS="10",
            CONJURE_SSH_CONNECT_TIMEOUT_SECONDS="5",
            CONJURE_HARDWARE_METRICS_SECONDS="0",
            # The agent's dependency wheels are built once per set of versions, not per test.
            CONJURE_SSH_WHEEL_DIR=str(ROOT / "wheels"),
            **emulators.S3_CREDENTIALS,
            **extra_env,
        )
        with running_stack(env) as settings:
            yield Fleet(settings, hosts, endpoint)


async def until(run, states: set[RunState], limit: float = 180):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        st = await run.status()
        if st.state in states:
            return st
        await asyncio.sleep(0.5)
    raise AssertionError(f"run {st.run_id} still {st.state}")


def host_line(fleet: Fleet, host: Host) -> str:
    out = conjure("machines").out
    return next(ln for ln in out.splitlines() if ln.startswith(f"root@{host.address} "))


async def activity_outcomes(
    settings: Settings, run_id: int, name: str, client: Client | None = None
) -> list[tuple[str, list[int], bool]]:
    """Each activity `name` the run scheduled, from its history: how it ended (its
    timeout type, or the event's kind), the attempts that started, and whether the
    last heartbeat carried details (the machine answered at least once)."""
    client = client or await make_client(settings)
    found: dict[int, tuple[str, list[int], bool]] = {}
    async for event in client.get_workflow_handle(f"run-{run_id}").fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name == name:
                found[event.event_id] = ("open", [], False)
        elif event.HasField("activity_task_started_event_attributes"):
            a = event.activity_task_started_event_attributes
            if a.scheduled_event_id in found:
                found[a.scheduled_event_id][1].append(a.attempt)
        elif event.HasField("activity_task_timed_out_event_attributes"):
            t = event.activity_task_timed_out_event_attributes
            if t.scheduled_event_id in found:
                info = t.failure.timeout_failure_info
                kind = {1: "START_TO_CLOSE", 2: "SCHEDULE_TO_START", 3: "SCHEDULE_TO_CLOSE",
                        4: "HEARTBEAT"}.get(info.timeout_type, str(info.timeout_type))  # fmt: skip
                beat = bool(info.last_heartbeat_details.payloads)
                found[t.scheduled_event_id] = (kind, found[t.scheduled_event_id][1], beat)
        else:
            for field in ("completed", "failed", "canceled"):
                attrs = f"activity_task_{field}_event_attributes"
                if event.HasField(attrs):
                    sid = getattr(event, attrs).scheduled_event_id
                    if sid in found:
                        found[sid] = (field, found[sid][1], False)
    return list(found.values())
