"""Test hosts: real machines for the fleet tests, made of network namespaces on this host.

Each host is

- a network namespace (`ip netns add`) joined to this host by a veth pair on a private
  /24 of the test's own (10.77.X.0/24, X free on this host): the host's address is the
  only way to reach it, and its traffic goes only between it and this host;
- its own Docker engine (`dockerd` run inside the namespace by `nsenter --net` with its own `--data-root`,
  `--exec-root`, socket, pidfile, `--bridge=none --iptables=false --ip6tables=false`), with
  the base image loaded into it (`docker save` once per image id, `docker load` per host);
- its own `sshd` listening on the host's veth address only, with its own host key and
  config, root login by a key made for the test session;
- its own root directory, `/var/lib/conjure-test-hosts/<tag>-h<i>/`, whose `home/` is the
  `$HOME` of every SSH session there (sshd's `SetEnv`), as is `DOCKER_HOST` (its engine).

A namespace shares this machine's filesystem, so "installed on the host" means: under that
host's `$HOME`, put there over SSH. Nothing the control side has is used by the host
unless it was copied there over SSH (the ssh provider does that).

Usage (contributors)::

    from tests.hosts import make_hosts

    with make_hosts(3) as hosts:            # needs root, ip, dockerd, sshd
        h = hosts[0]
        h.address                           # "10.77.X.2": ssh root@h.address -i h.identity_file
        h.ssh_host_entry()                  # a [[ssh_hosts]] entry for config.toml
        h.docker()                          # a Docker SDK client on the host's engine
        h.unplug(); h.plug()                # pull the host's cable, put it back

Teardown runs even when the test fails: every process started in a host's namespace is
killed by pid, its mounts are unmounted, then the veth pair, the namespace and the host's
directory are removed. `./test.sh` installs what this needs (`openssh-server`, `iproute2`).
The fleet tests that use it carry the `fleet` marker (`pytest -m fleet`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/var/lib/conjure-test-hosts")
SSHD = "/usr/sbin/sshd"
BASE_IMAGE = "conjure/base:bookworm"


def missing_tools() -> list[str]:
    """What this machine lacks to make test hosts (empty: it can)."""
    missing = [t for t in ("ip", "dockerd", "docker", "ssh-keygen") if not shutil.which(t)]
    if not Path(SSHD).exists():
        missing.append("sshd (openssh-server)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def _run(*cmd: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _free_subnet() -> int:
    """An X with no 10.77.X.* address on this host."""
    used = _run("ip", "-o", "-4", "addr", "show")
    start = os.getpid() % 200 + 20
    for i in range(250):
        x = (start + i) % 250 + 1
        if f"10.77.{x}." not in used:
            return x
    raise RuntimeError("no free 10.77.X.0/24 subnet on this host")


def _stop(pid: int, timeout: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child: poll for it
            if not Path(f"/proc/{pid}").exists():
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@dataclass
class Host:
    index: int
    tag: str
    subnet: int
    identity_file: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def netns(self) -> str:
        return f"cj{self.tag}h{self.index}"

    @property
    def veth_control(self) -> str:  # this host's end (at most 15 characters)
        return f"cj{self.tag}c{self.index}"

    @property
    def veth_host(self) -> str:  # the namespace's end
        return f"cj{self.tag}n{self.index}"

    @property
    def address(self) -> str:
        return f"10.77.{self.subnet}.{4 * self.index + 2}"

    @property
    def control_address(self) -> str:
        return f"10.77.{self.subnet}.{4 * self.index + 1}"

    @property
    def root(self) -> Path:
        return ROOT / f"{self.tag}-h{self.index}"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def docker_socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_socket}"

    def ssh_host_entry(self, **extra: object) -> dict[str, object]:
        """This host as a `[[ssh_hosts]]` entry of config.toml."""
        return {
            "host": self.address,
            "user": "root",
            "port": 22,
            "identity_file": str(self.identity_file),
            "known_hosts": str(self.root.parent / f"{self.tag}-known_hosts"),
            **extra,
        }

    def docker(self):  # type: ignore[no-untyped-def]
        import docker

        return docker.DockerClient(base_url=self.docker_host, timeout=60)

    def netns_exec(self, *cmd: str, check: bool = True, timeout: float = 120) -> str:
        return _run(*self.enter, *cmd, check=check, timeout=timeout)

    @property
    def enter(self) -> list[str]:
        """A command prefix that runs in the host's network namespace. `nsenter --net`, not
        `ip netns exec`: the latter remounts /sys, hiding the cgroups dockerd needs."""
        return ["nsenter", f"--net=/run/netns/{self.netns}"]

    def unplug(self) -> None:
        """Pull the cable: the host stops answering, its processes go on."""
        _run("ip", "link", "set", self.veth_control, "down")

    def plug(self) -> None:
        _run("ip", "link", "set", self.veth_control, "up")

    # --- booting a cloud machine's startup script ----------------------------------------

    def boot(
        self,
        script: str,
        *,
        files: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        name: str = "boot",
        data_dirs: tuple[str, ...] = (),
    ) -> Path:
        """Run a cloud startup script here as cloud-init does at first boot: as root, from
        a fresh state, with cloud-init's minimal environment. Returns the boot's folder;
        its `upper/` holds every file the script wrote, `script.log` what it printed.

        The machine is this host's namespace and, for its filesystem, a private mount
        namespace in which /etc, /opt, /root, /usr and /var are overlays on this machine's
        own (written to `upper/`, never to the real ones), /run and /tmp fresh tmpfs, and
        `/run/docker.sock` and `/var/run/docker.sock` this host's own engine. So what the script finds present (Docker,
        python3) it uses, and nothing it writes or installs reaches the shared machine.
        `files` are the image's own (e.g. /root/.aws/credentials, as an instance role would
        provide). Each of `data_dirs` is a symlink to a folder this host's engine sees
        at the same path, as a VM's engine shares the VM's disk (the engine runs outside
        the private mount namespace, so it would not see the overlays' files: a run's
        workspace must be there). systemd does not run here: `systemctl` is a stand-in (the one fake) that
        answers for docker when this host's engine answers, and for any other unit runs the
        unit file's ExecStart with its EnvironmentFile, in the background, logging to
        /var/log/<unit>.log, its pid in the boot folder's `<unit>.pid`."""
        boot = self.root / name
        (boot / "bin").mkdir(parents=True, exist_ok=True)
        for d in ("etc", "opt", "root", "usr", "var"):
            (boot / "upper" / d).mkdir(parents=True, exist_ok=True)
            (boot / "work" / d).mkdir(parents=True, exist_ok=True)
        for path, text in (files or {}).items():
            target = boot / "upper" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        (boot / "data").mkdir(exist_ok=True)
        for d in data_dirs:
            shared = boot / "data" / d.strip("/").replace("/", "_")
            shared.mkdir(exist_ok=True)
            link = boot / "upper" / d.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(shared)
        (boot / "script.sh").write_text(script)
        systemctl = boot / "bin" / "systemctl"
        systemctl.write_text(SYSTEMCTL)
        systemctl.chmod(0o755)
        overlays = "\n".join(
            f"mount -t overlay overlay -o lowerdir=/{d},upperdir={boot}/upper/{d},"
            f"workdir={boot}/work/{d} /{d}"
            for d in ("etc", "opt", "root", "usr", "var")
        )
        (boot / "machine.sh").write_text(
            f"""set -eu
mount --make-rprivate /
mount --bind {boot} /mnt
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
touch /run/docker.sock
mount --bind {self.docker_socket} /run/docker.sock  # before /var is an overlay
{overlays}
mount --bind /mnt/data {boot}/data  # the real folder again, below the /var overlay
[ /var/run -ef /run ] || {{ touch /var/run/docker.sock; mount --bind /run/docker.sock /var/run/docker.sock; }}
cd /
exec env -i PATH=/mnt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 {" ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())} \
  bash /mnt/script.sh
"""
        )
        with open(boot / "script.log", "ab") as log:
            proc = subprocess.run(
                [*self.enter, "unshare", "--mount", "--propagation", "private",
                 "bash", str(boot / "machine.sh")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=900,
            )  # fmt: skip
        if proc.returncode != 0:
            tail = (boot / "script.log").read_text()[-3000:]
            raise RuntimeError(f"host {self.name}: the startup script failed: {tail}")
        return boot

    # --- making and unmaking ------------------------------------------------------------

    def _spawn(self, name: str, *cmd: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [*self.enter, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def create(self, image_tar: Path | None) -> None:
        for d in (self.home, self.root / "ssh"):
            d.mkdir(parents=True, exist_ok=True)
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.veth_control, "type", "veth", "peer", "name", self.veth_host)
        _run("ip", "link", "set", self.veth_host, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.control_address}/30", "dev", self.veth_control)
        _run("ip", "link", "set", self.veth_control, "up")
        self.netns_exec("ip", "link", "set", "lo", "up")
        self.netns_exec("ip", "addr", "add", f"{self.address}/30", "dev", self.veth_host)
        self.netns_exec("ip", "link", "set", self.veth_host, "up")
        self._start_dockerd()
        self._start_sshd()
        self._wait_docker()
        if image_tar is not None:
            _run(
                "docker", "--host", self.docker_host, "load", "--input", str(image_tar), timeout=300
            )

    def _start_dockerd(self) -> None:
        conf = self.root / "daemon.json"
        conf.write_text("{}\n")  # not /etc/docker/daemon.json: this engine is the host's own
        self._spawn(
            "dockerd",
            "dockerd",
            "--config-file", str(conf),
            "--data-root", str(self.root / "docker"),
            "--exec-root", str(self.root / "docker-exec"),
            "--host", self.docker_host,
            "--pidfile", str(self.root / "docker.pid"),
            "--bridge=none", "--iptables=false", "--ip6tables=false",
        )  # fmt: skip

    def _wait_docker(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ok = subprocess.run(
                ["docker", "--host", self.docker_host, "version"], capture_output=True, timeout=30
            )
            if ok.returncode == 0:
                return
            time.sleep(0.3)
        log = (self.root / "dockerd.log").read_text()[-2000:]
        raise RuntimeError(f"host {self.name}: dockerd did not answer: {log}")

    def _start_sshd(self) -> None:
        ssh = self.root / "ssh"
        key = ssh / "ssh_host_ed25519_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        shutil.copy(f"{self.identity_file}.pub", ssh / "authorized_keys")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        (ssh / "sshd_config").write_text(
            f"""ListenAddress {self.address}:22
HostKey {key}
PidFile {ssh / "sshd.pid"}
AuthorizedKeysFile {ssh / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
GatewayPorts no
ClientAliveInterval 2
ClientAliveCountMax 3
MaxStartups 50
SetEnv HOME={self.home} DOCKER_HOST={self.docker_host}
Subsystem sftp internal-sftp
"""
        )
        self._spawn("sshd", SSHD, "-D", "-e", "-f", str(ssh / "sshd_config"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [*self.enter, "bash", "-c", f"</dev/tcp/{self.address}/22"],
                capture_output=True,
            )
            if probe.returncode == 0:
                (self.root.parent / f"{self.tag}-known_hosts").open("a").write(
                    f"{self.address} {(ssh / 'ssh_host_ed25519_key.pub').read_text()}"
                )
                return
            time.sleep(0.1)
        raise RuntimeError(f"host {self.name}: sshd did not listen: {self.root / 'sshd.log'}")

    def destroy(self) -> None:
        """Kill every process in the namespace (ours: dockerd, sshd, what they started,
        an agent started over SSH, run containers), unmount, remove everything."""
        with contextlib.suppress(Exception):
            self.netns_exec("ip", "link", "set", self.veth_host, "up", check=False)
        for proc in self.procs:  # dockerd first, gently: it stops its containers
            _stop(proc.pid, timeout=20)
        for _ in range(3):
            pids = _run("ip", "netns", "pids", self.netns, check=False).split()
            if not pids:
                break
            for p in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(p), signal.SIGKILL)
            time.sleep(0.3)
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.root))
        ]
        for m in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", m, check=False)
        _run("ip", "link", "del", self.veth_control, check=False)
        _run("ip", "netns", "del", self.netns, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


# systemd's stand-in for Host.boot (systemd cannot run in a namespace of a shared machine).
SYSTEMCTL = r"""#!/bin/bash
# systemctl [enable] [--now] UNIT | daemon-reload
set -eu
unit=""
for a in "$@"; do case "$a" in enable|start|--now|--quiet) ;; daemon-reload) exit 0 ;; *) unit="$a" ;; esac; done
unit="${unit%.service}"
if [ "$unit" = docker ]; then
  docker version >/dev/null && exit 0
  echo "systemctl: docker does not answer" >&2; exit 1
fi
file="/etc/systemd/system/$unit.service"
[ -f "$file" ] || { echo "systemctl: no unit $unit" >&2; exit 1; }
envfile=$(sed -n 's/^EnvironmentFile=//p' "$file")
exec_start=$(sed -n 's/^ExecStart=//p' "$file")
(
  set -a; [ -n "$envfile" ] && . "$envfile"; set +a
  exec setsid $exec_start </dev/null >>"/var/log/$unit.log" 2>&1
) &
echo $! > "/mnt/$unit.pid"
"""


def base_image_tar(image: str = BASE_IMAGE) -> Path:
    """`docker save` of the image, made once per image id and kept under ROOT/cache."""
    image_id = _run("docker", "image", "inspect", "--format", "{{.Id}}", image).strip()
    cache = ROOT / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / f"{image_id.replace(':', '-')}.tar"
    if not tar.exists():
        for old in cache.glob("*.tar"):
            old.unlink()
        tmp = tar.with_suffix(".part")
        _run("docker", "save", "--output", str(tmp), image, timeout=300)
        tmp.rename(tar)
    return tar


@contextlib.contextmanager
def make_hosts(n: int, *, image: str | None = BASE_IMAGE) -> Iterator[list[Host]]:
    """N fresh hosts, torn down on exit whatever happened."""
    missing = missing_tools()
    if missing:
        raise RuntimeError("test hosts need: " + ", ".join(missing) + " (./test.sh installs them)")
    tag = secrets.token_hex(2)
    subnet = _free_subnet()
    ROOT.mkdir(parents=True, exist_ok=True)
    key = ROOT / f"{tag}-id_ed25519"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "conjure-test", "-f", str(key))
    hosts = [Host(index=i, tag=tag, subnet=subnet, identity_file=key) for i in range(n)]
    try:
        tar = base_image_tar(image) if image else None
        with ThreadPoolExecutor(max_workers=n) as pool:
            for f in [pool.submit(h.create, tar) for h in hosts]:
                f.result()
        yield hosts
    finally:
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(Host.destroy, hosts))
        for p in ROOT.glob(f"{tag}-*"):
            if p.is_file():
                p.unlink()
