"""Conjure's default base image, built from the repository alone.

No image registry has to be reachable: the image is a Debian bookworm root
filesystem made with `debootstrap --variant=minbase` (python3, pip, venv, git,
ca-certificates, procps, and python-is-python3 so `python` is Python 3), stripped of apt lists, caches and documentation, and
turned into an image with `docker import`. Machines that can reach a registry may
try `docker pull` first (`pull=True`).

When a CA bundle is given (by default the host's, see `Settings.ca_bundle_path`),
its certificates are added to the image's bundle so pip and git work behind a
TLS-intercepting proxy, and PIP_CERT / REQUESTS_CA_BUNDLE / SSL_CERT_FILE point
at it.

    python -m conjure.infra.base_image [--image NAME] [--pull] [--force]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import docker
import docker.errors
from docker.utils import parse_repository_tag

from conjure.infra.locks import file_lock

DEFAULT_IMAGE = "conjure/base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_CACHE_DIR = pathlib.Path("/var/cache/conjure")
SUITE = "bookworm"
PACKAGES = (
    "python3",
    "python-is-python3",  # `python` on PATH, as Spell users' commands expect
    "python3-pip",  # `pip` and `pip3`
    "python3-venv",
    "git",
    "ca-certificates",
    "procps",
)
LABEL = "org.conjure.base"
IMAGE_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HOST_CERT_NAME = "conjure-host.crt"

# Suites a Debian mirror carries (Ubuntu's do not carry bookworm).
_DEBIAN_SUITES = {
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
    "experimental",
}
_MIRROR_SCHEMES = ("http://", "https://", "file:/")


class BaseImageError(RuntimeError):
    """The base image could not be built (debootstrap missing or failing, import failing)."""


# Mirror detection ---------------------------------------------------------------------


def _is_debian_mirror(uri: str, suites: list[str]) -> bool:
    if not uri.startswith(_MIRROR_SCHEMES):
        return False
    for suite in suites:
        base = suite.strip("/").split("/")[0]
        if base.endswith("-security"):
            continue  # the security archive does not carry the base suite
        if base.split("-")[0] in _DEBIAN_SUITES:
            return True
    return False


def _deb822_candidates(text: str) -> Iterator[tuple[str, list[str]]]:
    """(first URI, suites) of each enabled `Types: deb` stanza of a deb822 .sources file."""
    stanzas: list[dict[str, str]] = [{}]
    last = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("#"):
            continue
        if not line.strip():
            if stanzas[-1]:
                stanzas.append({})
            continue
        if line[0] in " \t" and last:  # continuation line
            stanzas[-1][last] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        stanzas[-1][last] = value.strip()
    for st in stanzas:
        if "deb" not in st.get("types", "").split():
            continue
        if st.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        uris = st.get("uris", "").split()
        if uris:
            yield uris[0], st.get("suites", "").split()


def _one_line_candidates(text: str) -> Iterator[tuple[str, list[str]]]:
    """(URI, [suite]) of each `deb URI SUITE COMPONENTS...` line of a sources.list file."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb ") and not line.startswith("deb\t"):
            continue
        rest = line[3:].strip()
        if rest.startswith("["):  # options: deb [arch=amd64 signed-by=...] URI ...
            end = rest.find("]")
            if end < 0:
                continue
            rest = rest[end + 1 :].strip()
        parts = rest.split()
        if len(parts) >= 2:
            yield parts[0], [parts[1]]


def detect_debian_mirror(sources_dir: pathlib.Path | str = "/etc/apt") -> str:
    """The Debian mirror apt uses on this host, or http://deb.debian.org/debian.

    Looks at `sources.list.d/debian.sources` (deb822), then `sources.list`, then
    the other files of `sources.list.d`, and returns the first URI of a `deb`
    source that carries a Debian suite (so an Ubuntu host, whose archive has no
    bookworm, gets the default, and the security archive is skipped).
    """
    root = pathlib.Path(sources_dir)
    listd = root / "sources.list.d"
    files: list[pathlib.Path] = [listd / "debian.sources", root / "sources.list"]
    if listd.is_dir():
        files += sorted(
            p
            for p in listd.iterdir()
            if p.suffix in (".sources", ".list") and p.name != "debian.sources"
        )
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        parse = _deb822_candidates if path.suffix == ".sources" else _one_line_candidates
        for uri, suites in parse(text):
            if _is_debian_mirror(uri, suites):
                return uri
    return DEFAULT_MIRROR


# Helpers --------------------------------------------------------------------------------


def _image_id(client: docker.DockerClient, image: str) -> str | None:
    try:
        return client.images.get(image).id
    except docker.errors.ImageNotFound:
        return None


def _find_debootstrap() -> str | None:
    found = shutil.which("debootstrap")
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        cand = os.path.join(d, "debootstrap")
        if os.access(cand, os.X_OK):
            return cand
    return None


def _mounts_under(path: pathlib.Path) -> list[str]:
    """Mount points at or below `path` (debootstrap mounts proc/sys in the target)."""
    prefix = str(path.resolve())
    found = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 2:
                    continue
                mnt = fields[1].replace("\\040", " ")
                if mnt == prefix or mnt.startswith(prefix + "/"):
                    found.append(mnt)
    except OSError:
        pass
    return found


def _remove_tree(path: pathlib.Path) -> None:
    """Remove a build directory, unmounting anything a failed debootstrap left mounted."""
    if not path.exists():
        return
    for mnt in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
    if _mounts_under(path):  # never recurse into a live /proc or /dev
        raise BaseImageError(f"cannot clean {path}: still mounted: {_mounts_under(path)}")
    shutil.rmtree(path, ignore_errors=True)


def _pem_blocks(text: str) -> list[str]:
    blocks, cur = [], []
    for line in text.splitlines():
        if "-----BEGIN CERTIFICATE-----" in line:
            cur = [line.strip()]
        elif cur:
            cur.append(line.strip())
            if "-----END CERTIFICATE-----" in line:
                blocks.append("\n".join(cur))
                cur = []
    return blocks


def _install_ca_bundle(rootfs: pathlib.Path, ca_bundle: pathlib.Path) -> int:
    """Append the host bundle's certificates missing from the image bundle; return how many.

    The host bundle is also kept as a local CA so a later `update-ca-certificates`
    in a derived image keeps it.
    """
    host_text = ca_bundle.read_text(errors="replace")
    host = _pem_blocks(host_text)
    if not host:
        raise BaseImageError(f"CA bundle {ca_bundle} holds no PEM certificate")
    bundle = rootfs / IMAGE_BUNDLE.lstrip("/")
    if bundle.is_symlink():
        bundle.unlink()
    current = bundle.read_text(errors="replace") if bundle.exists() else ""
    have = set(_pem_blocks(current))
    extra = [b for b in host if b not in have]
    if extra:
        body = current if not current or current.endswith("\n") else current + "\n"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        bundle.write_text(body + "\n".join(extra) + "\n")
        local = rootfs / "usr/local/share/ca-certificates"
        local.mkdir(parents=True, exist_ok=True)
        (local / HOST_CERT_NAME).write_text("\n".join(extra) + "\n")
    return len(extra)


def _strip_rootfs(rootfs: pathlib.Path) -> None:
    """Drop what a container does not need: apt lists and caches, docs, logs, host files."""
    for mnt in sorted(_mounts_under(rootfs), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
    if _mounts_under(rootfs):  # never empty a bind-mounted host /dev
        raise BaseImageError(f"{rootfs} still has mounts: {_mounts_under(rootfs)}")

    def clear(rel: str, keep: Callable[[pathlib.Path], bool] = lambda p: False) -> None:
        d = rootfs / rel
        if not d.is_dir() or d.is_symlink():
            return
        for child in d.iterdir():
            if keep(child):
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    clear("var/lib/apt/lists", keep=lambda p: p.name in ("partial", "lock"))
    clear("var/cache/apt", keep=lambda p: p.name == "archives")
    clear("var/cache/apt/archives", keep=lambda p: p.name in ("partial", "lock"))
    clear("var/cache/debconf", keep=lambda p: not p.name.endswith("-old"))
    clear("var/log")
    clear("tmp")
    clear("var/tmp")
    clear("usr/share/man")
    clear("usr/share/info")
    clear("usr/share/locale")
    # Documentation, keeping each package's copyright notice.
    doc = rootfs / "usr/share/doc"
    if doc.is_dir():
        for pkg in doc.iterdir():
            if pkg.is_dir() and not pkg.is_symlink():
                for child in pkg.iterdir():
                    if child.name == "copyright":
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
    # Docker provides /dev, /proc, /sys, hostname and resolver configuration.
    clear("dev")
    clear("proc")
    clear("sys")
    (rootfs / "etc/hostname").unlink(missing_ok=True)
    for rel in ("etc/resolv.conf", "etc/machine-id"):
        p = rootfs / rel
        if p.is_symlink():
            p.unlink()
            p.write_text("")
        elif p.exists():
            p.write_text("")


def _run_debootstrap(
    debootstrap: str, rootfs: pathlib.Path, mirror: str, log: Callable[[str], None]
) -> None:
    cmd = [
        debootstrap,
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(rootfs),
        mirror,
    ]
    log("$ " + " ".join(cmd))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    env["PATH"] = env.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    tail: collections.deque[str] = collections.deque(maxlen=30)
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
        )
    except OSError as e:
        raise BaseImageError(f"cannot run debootstrap: {e}") from e
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                log(line)
        rc = proc.wait()
    except BaseException:  # interrupted: stop debootstrap before the tree is removed
        proc.kill()
        proc.wait()
        raise
    if rc != 0:
        debootstrap_log = rootfs / "debootstrap" / "debootstrap.log"
        extra: list[str] = []
        if debootstrap_log.exists():
            extra = debootstrap_log.read_text(errors="replace").splitlines()[-15:]
        detail = "\n".join(list(tail) + (["-- debootstrap.log --"] + extra if extra else []))
        errors = [ln for ln in list(tail) + extra if ln.startswith("E:")]
        cause = (errors or list(tail) or ["no output"])[-1]
        raise BaseImageError(
            f"debootstrap failed (exit {rc}) with mirror {mirror}: {cause}\n{detail}"
        )


def _import(
    client: docker.DockerClient,
    tarpath: pathlib.Path,
    image: str,
    changes: list[str],
) -> str:
    repository, tag = parse_repository_tag(image)
    if tag and tag.startswith("sha256:"):
        raise BaseImageError(f"cannot build an image named by digest: {image}")
    try:
        out = client.api.import_image(
            src=str(tarpath), repository=repository, tag=tag or "latest", changes=changes
        )
    except docker.errors.APIError as e:
        raise BaseImageError(f"docker import failed: {e.explanation or e}") from e
    for line in str(out).splitlines():
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if isinstance(msg, dict) and msg.get("error"):
                raise BaseImageError(f"docker import failed: {msg['error']}")
    image_id = _image_id(client, image)
    if not image_id:
        raise BaseImageError(f"docker import did not produce {image}: {out!s:.300}")
    return image_id


# Entry points ---------------------------------------------------------------------------


def ensure_base_image(
    client: docker.DockerClient,
    image: str = DEFAULT_IMAGE,
    *,
    pull: bool = False,
    mirror: str = "",
    ca_bundle: pathlib.Path | None = None,
    cache_dir: pathlib.Path | None = None,
    log: Callable[[str], None] = print,
    force: bool = False,
) -> str:
    """Return the id of `image`, pulling or building it first when it is missing.

    `force` rebuilds even when the image exists (the tag moves to the new image).
    Concurrent callers (threads or processes) on one host build once: the build
    holds an flock on `cache_dir/base-image.lock` and re-checks under it.
    """
    previous = _image_id(client, image)
    if not force:
        if previous:
            return previous
        if pull:
            try:
                log(f"pulling {image}")
                client.images.pull(image)
                found = _image_id(client, image)
                if found:
                    return found
            except docker.errors.DockerException as e:
                reason = str(getattr(e, "explanation", "") or e).splitlines()[0][:200]
                log(f"pull of {image} failed ({reason}); building it locally")

    cache = pathlib.Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BaseImageError(f"cannot create cache directory {cache}: {e}") from e

    lock = cache / "base-image.lock"
    with file_lock(lock, lambda: log(f"waiting for another base image build ({lock})")):
        if not force:
            found = _image_id(client, image)
            if found:  # another caller built it while we waited
                return found
        # Holding the lock, no other build runs: leftovers are from crashed builds.
        for stale in cache.glob("base-build-*"):
            _remove_tree(stale)
        image_id = _build(client, image, mirror=mirror, ca_bundle=ca_bundle, cache=cache, log=log)
    if previous and previous != image_id:  # a forced rebuild: drop the untagged old image
        with contextlib.suppress(docker.errors.DockerException):
            client.images.remove(previous)
            log(f"removed the previous {image} {previous}")
    return image_id


def _build(
    client: docker.DockerClient,
    image: str,
    *,
    mirror: str,
    ca_bundle: pathlib.Path | None,
    cache: pathlib.Path,
    log: Callable[[str], None],
) -> str:
    debootstrap = _find_debootstrap()
    if not debootstrap:
        raise BaseImageError(
            "debootstrap is not installed (apt-get install debootstrap); "
            f"it is needed to build {image}"
        )
    if os.geteuid() != 0:
        raise BaseImageError(f"building {image} with debootstrap needs root")
    mirror = mirror or detect_debian_mirror()
    started = time.monotonic()
    work = pathlib.Path(tempfile.mkdtemp(prefix="base-build-", dir=cache))
    try:
        rootfs = work / "rootfs"
        rootfs.mkdir()
        log(f"building {image}: debootstrap {SUITE} from {mirror}")
        _run_debootstrap(debootstrap, rootfs, mirror, log)

        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
        ]
        if ca_bundle:
            ca_bundle = pathlib.Path(ca_bundle)
            if not ca_bundle.is_file():
                raise BaseImageError(f"CA bundle {ca_bundle} does not exist")
            added = _install_ca_bundle(rootfs, ca_bundle)
            log(f"added {added} certificate(s) from {ca_bundle} to the image's CA bundle")
            changes += [
                f"ENV PIP_CERT={IMAGE_BUNDLE}",
                f"ENV REQUESTS_CA_BUNDLE={IMAGE_BUNDLE}",
                f"ENV SSL_CERT_FILE={IMAGE_BUNDLE}",
            ]
        changes += [f"LABEL {LABEL}=1", 'CMD ["/bin/sh"]']

        _strip_rootfs(rootfs)
        tarpath = work / "rootfs.tar"
        log("packing the root filesystem")
        res = subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarpath), "."],
            check=False,
            capture_output=True,
            text=True,
            errors="replace",
        )
        if res.returncode != 0:
            raise BaseImageError(f"tar failed: {res.stderr.strip()[-2000:]}")
        # The tree is no longer needed; free the space before docker copies the tar.
        _remove_tree(rootfs)
        log(f"importing {image} ({tarpath.stat().st_size / 1e6:.0f} MB)")
        image_id = _import(client, tarpath, image, changes)
        log(f"built {image} {image_id} in {time.monotonic() - started:.0f}s")
        return image_id
    finally:
        _remove_tree(work)


def _client(docker_host: str = "") -> docker.DockerClient:
    if docker_host:
        return docker.DockerClient(base_url=docker_host, timeout=600)
    return docker.from_env(timeout=600)


def main(argv: list[str] | None = None) -> int:
    try:
        from conjure.infra.config import Settings

        settings: Settings | None = Settings()
    except Exception:
        settings = None

    default_image = settings.base_image if settings else DEFAULT_IMAGE
    parser = argparse.ArgumentParser(
        prog="python -m conjure.infra.base_image",
        description="Build (or pull) Conjure's default base image.",
    )
    parser.add_argument("--image", default=default_image, help=f"default: {default_image}")
    parser.add_argument(
        "--pull",
        action="store_true",
        default=bool(settings and settings.base_image_pull),
        help="try `docker pull` before building",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    parser.add_argument(
        "--mirror",
        default=settings.debian_mirror if settings else "",
        help="Debian mirror (default: the one apt uses here)",
    )
    parser.add_argument(
        "--cache-dir", type=pathlib.Path, default=None, help=f"default: {DEFAULT_CACHE_DIR}"
    )
    args = parser.parse_args(argv)

    if settings:
        ca_bundle = settings.ca_bundle_path
    else:
        host = pathlib.Path(IMAGE_BUNDLE)
        ca_bundle = host if host.exists() else None

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        client = _client(settings.docker_host if settings else "")
        client.ping()
    except docker.errors.DockerException as e:
        print(f"error: cannot reach the Docker engine: {e}", file=sys.stderr)
        return 1
    try:
        image_id = ensure_base_image(
            client,
            args.image,
            pull=args.pull,
            mirror=args.mirror,
            ca_bundle=ca_bundle,
            cache_dir=args.cache_dir,
            log=log,
            force=args.force,
        )
    except BaseImageError as e:
        # The debootstrap output was streamed above: one line says what failed.
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    except (docker.errors.DockerException, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was built", file=sys.stderr)
        return 130
    print(f"{args.image} {image_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
