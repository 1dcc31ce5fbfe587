"""Conjure's configuration: `$CONJURE_HOME/config.toml` and `CONJURE_*` variables.

Environment variables win over the file; the file wins over the defaults. With
no configuration at all everything runs on the embedded default: a Temporal dev
server, a control worker and local machines on this host, a local object store.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class SSHHost(BaseModel):
    """One `[[ssh_hosts]]` entry of config.toml: a machine of the team's own."""

    host: str  # an address, or a name from ~/.ssh/config
    user: str = ""  # empty: ~/.ssh/config's, else the current user
    port: int = 22
    identity_file: str = ""  # empty: ssh's default keys and agent
    machine_type: str = ""  # empty: detected (vCPUs, memory, GPUs via nvidia-smi)
    known_hosts: str = ""  # empty: ~/.ssh/known_hosts (host keys are always checked)
    conjure_dir: str = ".conjure"  # the agent's home on the host; relative: to its $HOME

    @property
    def key(self) -> str:
        """A file-name-safe name of the host, unique per user@host:port."""
        raw = f"{self.user or '-'}@{self.host}:{self.port}"
        return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in raw)

    @property
    def label(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}" + (
            f":{self.port}" if self.port != 22 else ""
        )


def conjure_home() -> Path:
    return Path(os.environ.get("CONJURE_HOME") or Path.home() / ".conjure").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONJURE_", extra="ignore")

    home: Path = Field(default_factory=conjure_home)

    # Temporal. `embedded` means: the dev server `conjure up` starts on 127.0.0.1.
    temporal_address: str = ""
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_tls_ca: Path | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_api_key: str | None = None
    embedded_port: int = 7233
    embedded_ui_port: int = 8233
    control_task_queue: str = "conjure-control"
    temporal_ui_url: str = ""  # a production cluster's Web UI, linked from the console

    # Web console: `conjure up` starts it, `conjure console` runs it in the foreground.
    console_port: int = 8234  # 0: `conjure up` starts no console
    console_bind: str = "127.0.0.1"  # off loopback, every request needs console_token
    console_token: str = ""  # empty off loopback: one is generated, kept and printed

    # The warm CLI: the stack's fork server that runs `conjure` commands with everything
    # already imported ($CONJURE_HOME/run/cli.sock; cli/warm.py). false: every command
    # starts cold in its own process.
    warm_cli: bool = True

    # Object store: a local directory by default (file://$CONJURE_HOME/store), or
    # s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    store_url: str = ""
    store_options: dict[str, Any] = Field(default_factory=dict)  # passed to fsspec as is
    s3_endpoint_url: str = ""  # e.g. a MinIO or moto server; empty: AWS
    gcs_endpoint_url: str = ""  # e.g. a GCS emulator; empty: Google
    azure_account_name: str = ""  # for az:// when no connection string is given
    azure_connection_string: str = ""
    transfer_workers: int = 16  # files (and parts of large files) moved at once

    # Machines.
    provider: str = "local"
    default_machine_type: str = "cpu"
    idle_timeout_seconds: float = 300.0
    max_concurrent_runs: int = 0  # 0: no limit (split over pool shards)
    # The pool as this many entity workflows (shard 0 keeps the id `conjure-pool`); a
    # run leases from shard `run_id mod N` ("run") or by a hash of its machine type
    # ("machine_type"). Set it alike for the control worker and every client.
    pool_shards: int = Field(default=1, ge=1, le=256)
    pool_shard_key: Literal["run", "machine_type"] = "run"
    machine_ready_timeout_seconds: float = 120.0  # local; a cloud default is 900 (boot+install)
    machine_health_seconds: float = 30.0  # how often the pool asks the provider about machines
    max_machines: dict[str, int] = Field(default_factory=dict)  # machine type -> cap
    reconcile_interval_seconds: float = 60.0  # 0: no reconciler
    # How often the control worker looks for run workflows terminated from outside
    # (the Temporal Web UI) that still hold a machine, and gives it back. 0: never.
    reap_interval_seconds: float = 10.0
    agent_timeout_seconds: float = 60.0  # an idle machine's agent silent this long: terminated
    cluster_name: str = "conjure"  # tagged on every cloud instance; the reconciler's scope
    spot: bool = False  # spot/preemptible instances where the machine type allows
    agent_package: str = "conjure"  # what a cloud machine pip-installs for its agent
    disk_gb: int = 100

    # SSH hosts (provider = "ssh", or machine types naming it): the team's own machines.
    ssh_hosts: list[SSHHost] = Field(default_factory=list)
    ssh_connect_timeout_seconds: float = 10.0  # connecting and each remote step's start
    ssh_keepalive_seconds: float = 5.0  # a host silent 3 times this long is disconnected
    # Where a host's agent finds, on its own loopback, the forwards of this side's
    # Temporal server and object-store endpoint (when those are on this side's loopback).
    ssh_remote_temporal_port: int = 17233
    ssh_remote_store_port: int = 17234
    ssh_wheel_dir: Path | None = None  # the agent's wheels; empty: $CONJURE_HOME/ssh/wheels

    # AWS (provider = "aws"): boto3's usual credentials.
    aws_region: str = "us-east-1"
    aws_endpoint_url: str = ""  # e.g. a moto_server in tests
    aws_image_id: str = ""  # empty: the latest Debian 12 AMI
    aws_subnet_id: str = ""
    aws_security_group_ids: list[str] = Field(default_factory=list)
    aws_key_name: str = ""
    aws_instance_profile: str = ""

    # Google Cloud (provider = "gcp"): application default credentials.
    gcp_project: str = ""
    gcp_zone: str = "us-central1-a"
    gcp_image: str = "projects/debian-cloud/global/images/family/debian-12"
    gcp_network: str = "global/networks/default"
    gcp_subnetwork: str = ""
    gcp_service_account: str = ""

    # Azure (provider = "azure"): DefaultAzureCredential.
    azure_subscription_id: str = ""
    azure_resource_group: str = ""
    azure_location: str = "eastus"
    azure_subnet_id: str = ""
    azure_image: str = "Debian:debian-12:12-gen2:latest"  # publisher:offer:sku:version
    azure_admin_username: str = "conjure"
    azure_ssh_public_key: str = ""

    # Environment.
    base_image: str = "conjure/base:bookworm"
    base_image_pull: bool = False  # try `docker pull` before building locally
    debian_mirror: str = ""  # empty: the one apt uses on this host
    ca_bundle: Path | None = None  # empty: the host bundle if it exists
    docker_host: str = ""  # empty: DOCKER_HOST or the local socket
    registry: str = ""  # HOST[:PORT]: push built environments, pull missing ones

    # Runs.
    include_uncommitted: bool = True
    log_lines_per_window: int = 1000
    log_window_seconds: float = 10.0
    stop_grace_seconds: float = 30.0
    execute_heartbeat_seconds: float = 20.0  # a machine silent this long: the run is Interrupted
    hardware_metrics_seconds: float = 10.0  # CPU/memory/GPU sampling interval; 0: off
    # --auto-resume runs: files new or changed in the working directory go to the store
    # this often while Running (and when the agent is told to stop)
    checkpoint_sync_seconds: float = 60.0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=conjure_home() / "config.toml")
        return (init_settings, env_settings, toml)

    # Derived values -----------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when Conjure runs its own Temporal dev server."""
        return not self.temporal_address

    @property
    def address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.embedded_port}"

    @property
    def ui_url(self) -> str:
        if self.temporal_ui_url:
            return self.temporal_ui_url.rstrip("/")
        return f"http://127.0.0.1:{self.embedded_ui_port}" if self.embedded else ""

    @property
    def console_url(self) -> str:
        host = self.console_bind
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1" if host != "::" else "[::1]"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.console_port}"

    @property
    def store(self) -> str:
        return self.store_url or f"file://{self.home / 'store'}"

    @property
    def ca_bundle_path(self) -> Path | None:
        if self.ca_bundle:
            return self.ca_bundle
        host = Path("/etc/ssl/certs/ca-certificates.crt")
        return host if host.exists() else None

    @property
    def run_dir(self) -> Path:
        """Pid files and logs of the embedded stack."""
        return self.home / "run"

    @property
    def machines_dir(self) -> Path:
        """Where local machines keep their state (workspaces, caches)."""
        return self.home / "machines"

    def child_env(self) -> dict[str, str]:
        """This process's environment plus every setting made here, as CONJURE_* variables,
        so a process Conjure starts (worker, agent) sees the same settings, including
        ones given to `Settings(...)` in code rather than through the environment."""
        import json

        env = dict(os.environ)
        for name in self.model_fields_set:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (dict, list)):
                text = json.dumps(self.model_dump(mode="json", include={name})[name])
            else:
                text = str(value)
            env[f"CONJURE_{name.upper()}"] = text
        env["CONJURE_HOME"] = str(self.home)
        return env

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@lru_cache(maxsize=1)
def _cached(home: str, env_key: str) -> Settings:
    return Settings()


def get_settings() -> Settings:
    """Settings for this process, re-read when CONJURE_HOME or CONJURE_* change."""
    env_key = repr(sorted((k, v) for k, v in os.environ.items() if k.startswith("CONJURE_")))
    return _cached(str(conjure_home()), env_key)
