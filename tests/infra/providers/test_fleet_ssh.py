"""The ssh provider on real hosts (tests/hosts.py): three network namespaces, each with
its own sshd and Docker engine, reachable only over their veth addresses.

The control side is a real embedded stack (Temporal dev server, control worker) whose
store is S3 (moto_server on this side's loopback): the hosts' agents reach Temporal and
the store only through the reverse forwards of their SSH tunnels. Machine type `fleet`
names the ssh provider; `cpu` stays local.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import tomli_w

from conjure import AsyncConjure
from conjure.infra.config import Settings
from conjure.infra.providers import ssh
from conjure.workflows.models import RunState
from tests import emulators
from tests.cli.test_run_e2e import git
from tests.conftest import conjure, running_stack, stack_env
from tests.hosts import ROOT, Host, make_hosts, missing_tools

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(bool(missing_tools()), reason=f"test hosts need {missing_tools()}"),
]

HEARTBEAT = 6.0
N = int(os.environ.get("CONJURE_FLEET_RUNS", "30"))

# The run container's own addresses (host network: the host's), by SIOCGIFADDR.
WHERE = """import fcntl, socket, struct
for _, name in socket.if_nameindex():
    if name != "lo":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        packed = struct.pack("256s", name.encode())
        print(socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, packed)[20:24]))
"""


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


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
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
            CONJURE_EXECUTE_HEARTBEAT_SECONDS=str(HEARTBEAT),
            CONJURE_SSH_KEEPALIVE_SECONDS="2",
            CONJURE_RECONCILE_INTERVAL_SECONDS="10",
            CONJURE_SSH_CONNECT_TIMEOUT_SECONDS="5",
            CONJURE_HARDWARE_METRICS_SECONDS="0",
            # The agent's dependency wheels are built once per set of versions, not per test.
            CONJURE_SSH_WHEEL_DIR=str(ROOT / "wheels"),
            **emulators.S3_CREDENTIALS,
        )
        with running_stack(env) as settings:
            yield Fleet(settings, hosts, endpoint)


def _project(tmp: Path) -> Path:
    proj = tmp / "proj"
    proj.mkdir(exist_ok=True)
    (proj / "hello.txt").write_text("hi\n")
    (proj / "where.py").write_text(WHERE)
    if not (proj / ".git").exists():
        git(proj, "init", "-q")
        git(proj, "add", ".")
        git(proj, "commit", "-q", "-m", "fleet")
    return proj


async def _runs(fleet: Fleet, proj: Path, n: int, command: str) -> list:  # type: ignore[type-arg]
    c = AsyncConjure(fleet.settings)
    runs = [await c.run(command, machine_type="fleet", cwd=proj) for _ in range(n)]
    return await asyncio.gather(*(r.wait() for r in runs))


def test_thirty_runs_over_three_hosts(fleet: Fleet, tmp_path: Path) -> None:
    proj = _project(tmp_path)
    t0 = time.monotonic()
    cmd = "python3 where.py > where.txt && cat where.txt hello.txt"
    statuses = asyncio.run(_runs(fleet, proj, N, cmd))
    print(f"{N} runs on 3 ssh hosts: {time.monotonic() - t0:.1f}s")
    bad = [s for s in statuses if s.state != RunState.COMPLETE]
    assert not bad, (bad[0], conjure("logs", str(bad[0].run_id)))
    machines: dict[str, str] = {}
    for s in statuses:
        body = fleet.s3.get_object(Bucket="store", Key=f"team/runs/{s.run_id}/where.txt")
        address = body["Body"].read().decode().strip()
        host = fleet.by_address(address)  # the container ran on a test host, not here
        assert fleet.host_of(s.machine_id) is host, (s.machine_id, address)
        machines.setdefault(s.machine_id, address)
        assert machines[s.machine_id] == address
        logs = fleet.s3.list_objects_v2(Bucket="store", Prefix=f"team/logs/{s.run_id}/")
        assert logs.get("KeyCount", 0) > 0, (s.run_id, logs)  # the host's agent wrote them
    for s in statuses[:3]:  # and they read back as the program printed them
        logs = conjure("logs", str(s.run_id))
        assert logs.code == 0 and "hi" in logs.out and "10.77." in logs.out, logs
    # Every host served, each by one machine reused for its later runs.
    assert sorted(machines.values()) == sorted(h.address for h in fleet.hosts), machines
    assert sum(1 for s in statuses if s.reused_machine) == N - 3
    out = conjure("machines")
    assert out.code == 0, out
    for h in fleet.hosts:
        assert f"root@{h.address}" in out.out, out
    assert out.out.split("SSH HOST")[1].count("in use by ssh-") == 3, out
    # The hosts' containers were on their own engines; none on this host's.
    for h in fleet.hosts:
        assert h.docker().containers.list(all=True, filters={"label": "org.conjure.machine"}) == []


async def _until(run, states: set[RunState], limit: float = 180):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        st = await run.status()
        if st.state in states:
            return st
        await asyncio.sleep(0.5)
    raise AssertionError(f"run {st.run_id} still {st.state}")


def test_stop_and_kill_a_remote_run(fleet: Fleet, tmp_path: Path) -> None:
    proj = _project(tmp_path)

    async def go() -> tuple:  # type: ignore[type-arg]
        c = AsyncConjure(fleet.settings)
        cmd = "trap 'echo got TERM; exit 0' TERM; echo started; while true; do sleep 0.2; done"
        runs = [await c.run(cmd, machine_type="fleet", cwd=proj) for _ in range(2)]
        running = [await _until(r, {RunState.RUNNING}) for r in runs]
        await runs[0].stop()
        await runs[1].kill()
        return running, [await r.wait() for r in runs]

    running, (stopped, killed) = asyncio.run(go())
    assert stopped.state == RunState.STOPPED and killed.state == RunState.KILLED, (stopped, killed)
    assert "got TERM" in conjure("logs", str(stopped.run_id)).out
    for st in running:  # the containers were on the hosts' engines, and are gone from them
        host = fleet.host_of(st.machine_id)
        left = host.docker().containers.list(
            all=True, filters={"label": f"org.conjure.run={st.run_id}"}
        )
        assert left == [], left


def test_unplugged_host_interrupts_its_run_and_comes_back(fleet: Fleet, tmp_path: Path) -> None:
    proj = _project(tmp_path)

    async def go():  # type: ignore[no-untyped-def]
        c = AsyncConjure(fleet.settings)
        run = await c.run("echo up; sleep 600", machine_type="fleet", cwd=proj)
        st = await _until(run, {RunState.RUNNING})
        host = fleet.host_of(st.machine_id)
        host.unplug()
        unplugged = time.time()
        try:
            end = await _until(run, {RunState.INTERRUPTED, RunState.COMPLETE, RunState.FAILED})
        finally:
            line = _host_line(fleet, host)
            host.plug()
        return host, unplugged, end, line

    host, unplugged, end, line = asyncio.run(go())
    assert end.state == RunState.INTERRUPTED, end
    assert "the machine stopped answering" in end.reason, end.reason
    took = end.timeline[-1].at.timestamp() - unplugged
    # Not a timing test (2 shared cores): the ratio is printed; the bound only says the
    # run did not wait on the host (the design's figure is under 2 x the heartbeat).
    print(f"unplugged -> Interrupted: {took:.1f}s = {took / HEARTBEAT:.1f} x the heartbeat timeout")
    assert took < 10 * HEARTBEAT, (took, end.reason)
    deadline = time.monotonic() + 180
    while "unhealthy" in line and time.monotonic() < deadline:
        time.sleep(2)  # the reconciler probes unhealthy hosts; this one answers again
        line = _host_line(fleet, host)
    assert line.split()[-1] == "free", line
    # It serves again: with the other hosts taken, the next runs reach it too.
    statuses = asyncio.run(_runs(fleet, proj, 3, "python3 where.py"))
    assert [s.state for s in statuses] == [RunState.COMPLETE] * 3
    assert host.address in {fleet.host_of(s.machine_id).address for s in statuses}


def _host_line(fleet: Fleet, host: Host) -> str:
    out = conjure("machines").out
    return next(ln for ln in out.splitlines() if ln.startswith(f"root@{host.address} "))


@pytest.mark.parametrize(
    ("machine_type", "user_port", "line"),
    [
        ("fleet-badkey", ("nobody", ""), "key refused"),
        ("fleet-noport", ("root", ":2222"), "unreachable: "),
    ],
)
def test_a_host_that_cannot_serve_is_one_line(
    fleet: Fleet, tmp_path: Path, machine_type: str, user_port: tuple[str, str], line: str
) -> None:
    label = f"{user_port[0]}@{fleet.hosts[0].address}{user_port[1]}"
    r = conjure("run", "-t", machine_type, "true", cwd=_project(tmp_path))
    assert r.code != 0 and "Traceback" not in r.err, r
    assert "no machine: " in r.err and f"ssh host {label}: {line}" in r.err, r
    listed = conjure("machines").out
    row = next(ln for ln in listed.splitlines() if ln.startswith(f"{label} "))
    assert f"{machine_type} " in row and "unhealthy: " + line in row, listed
