"""Run environments, client side: validate every environment flag, normalise the
environment and name its image by a hash of it.

Nothing a user types becomes Dockerfile text. apt names follow Debian's package
name rules, pip requirements must parse with `packaging`, requirement and conda
files are parsed line by line and re-written in a normal form, image references
follow Docker's reference grammar. The machine (infra/env_build.py) writes these
values as data files into the build context; the Dockerfile itself is constant.

The image tag is `conjure/env:<hash>` of the normalised environment (base image,
framework, apt, pip, file contents, CA bundle), so an unchanged environment is
built once and then reused, and any change (one line of requirements.txt) is a
new image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# yaml and packaging are imported where a conda file or a requirement is read, so a run
# without either (and `conjure run`'s start-up) does without them.
from conjure.infra.catalog import builtin_with_overrides
from conjure.infra.errors import OptionError
from conjure.workflows.models import EnvSpec

# Bump when the build recipe (infra/env_build.py) changes what an image holds.
RECIPE_VERSION = 2  # 2: every built image has `python` and `pip`
FRAMEWORKS_FILE = Path(__file__).with_name("frameworks.toml")
ENV_REPOSITORY = "conjure/env"
FRAMEWORK_REPOSITORY = "conjure/framework"
MAX_FILE_BYTES = 256 * 1024

# Debian policy 5.6.1: at least two characters, lower case letters, digits, + - .,
# starting with an alphanumeric. An optional =VERSION (policy 5.6.12) may follow.
APT_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
APT_VERSION = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*")

# Docker's reference grammar (distribution/reference), without digests' algorithm variety.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
IMAGE_REF = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?"
)
REGISTRY = re.compile(_DOMAIN)

# Options a requirements file may carry (pip's requirements file format), and whether
# each takes a value. Anything else (-r, -c, -e, local paths) is refused: the file's
# neighbours are not in the build.
_REQ_OPTIONS = {
    "-i": "--index-url",
    "--index-url": "--index-url",
    "--extra-index-url": "--extra-index-url",
    "-f": "--find-links",
    "--find-links": "--find-links",
    "--trusted-host": "--trusted-host",
    "--no-binary": "--no-binary",
    "--only-binary": "--only-binary",
}
_REQ_FLAGS = {"--pre", "--prefer-binary", "--no-index"}
_URL = re.compile(r"(?:git\+)?(?:https?|ssh)://[^\s'\"\\]+")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?")
_BINARY_VALUE = re.compile(
    r"(?::all:|:none:|[A-Za-z0-9._-]+)(?:,(?::all:|:none:|[A-Za-z0-9._-]+))*"
)
_HASH = re.compile(r"--hash[= ](sha256|sha384|sha512):[0-9a-f]+")
_PIP_ALWAYS = {"pip", "setuptools", "wheel", "distribute", "pkg-resources"}


def _printable(value: str) -> bool:
    return all(ch.isprintable() for ch in value)


def _show(value: str) -> str:
    return repr(value) if not _printable(value) or not value else value


# --- single values ------------------------------------------------------------------


def parse_apt(value: str) -> str:
    """An apt package name, optionally NAME=VERSION, as Debian allows them."""
    name, eq, version = value.strip().partition("=")
    if not APT_NAME.fullmatch(name) or (eq and not APT_VERSION.fullmatch(version)):
        raise OptionError(
            "apt",
            f"{_show(value)} is not a Debian package name (lower case letters, digits, "
            "+ - . ; at least two characters; optionally =VERSION)",
        )
    return f"{name}={version}" if eq else name


def parse_pip(value: str, option: str = "pip", where: str = "") -> str:
    """A PEP 508 requirement such as `Pillow>=8.3.2`, in its normal form."""
    from packaging.requirements import InvalidRequirement, Requirement

    text = value.strip()
    if not text or not _printable(text) or text.startswith("-"):
        raise OptionError(option, f"{where}{_show(value)} is not a pip requirement")
    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        first = str(e).splitlines()[0]
        raise OptionError(
            option, f"{where}{_show(value)} is not a pip requirement ({first})"
        ) from None
    if req.url and not _URL.fullmatch(req.url):
        raise OptionError(option, f"{where}{_show(value)}: only http(s)/ssh URLs can be installed")
    return str(req)


def parse_image(value: str, option: str = "docker_image") -> str:
    text = value.strip()
    first, slash, _ = text.partition("/")
    # As Docker splits it: the first part is a registry only with a dot, a port or localhost.
    bad_first = (
        slash
        and not ("." in first or ":" in first or first == "localhost")
        and (first != first.lower())
    )
    if not IMAGE_REF.fullmatch(text) or len(text) > 255 or bad_first:
        raise OptionError(
            option,
            f"{_show(value)} is not a Docker image reference "
            "([REGISTRY/]NAME[:TAG][@sha256:DIGEST])",
        )
    return text


def parse_registry(value: str) -> str:
    text = value.strip().rstrip("/")
    if text and not REGISTRY.fullmatch(text):
        raise OptionError("registry", f"{_show(value)} is not HOST[:PORT]")
    return text


# --- files --------------------------------------------------------------------------


def _read(path: Path, option: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise OptionError(option, f"{path} does not exist or is not a file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise OptionError(option, f"{path} is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        return p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(option, f"cannot read {path}: {e}") from None


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with `\\` continuations joined and comments dropped, with their numbers."""
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        stripped = re.sub(r"(^|\s)#.*$", "", buf).strip()
        if stripped:
            out.append((start, stripped))
        buf = ""
    if buf.strip():
        out.append((start, re.sub(r"(^|\s)#.*$", "", buf).strip()))
    return out


def parse_requirements(text: str, source: str, option: str = "pip_req") -> list[str]:
    """A pip requirements file as normalised lines: requirements and index options."""
    out: list[str] = []
    for n, line in _logical_lines(text):
        where = f"{source} line {n}: "
        if not _printable(line):
            raise OptionError(option, f"{where}control characters are not allowed")
        if line.startswith("-"):
            try:
                tokens = shlex.split(line)
            except ValueError as e:
                raise OptionError(option, f"{where}{e}") from None
            opt, eq, val = tokens[0].partition("=")
            if opt in _REQ_FLAGS and not eq and len(tokens) == 1:
                out.append(opt)
                continue
            if opt in _REQ_OPTIONS:
                values = ([val] if eq else []) + tokens[1:]
                if len(values) != 1:
                    raise OptionError(option, f"{where}{opt} takes one value")
                name = _REQ_OPTIONS[opt]
                value = values[0]
                ok = {
                    "--trusted-host": _HOST,
                    "--no-binary": _BINARY_VALUE,
                    "--only-binary": _BINARY_VALUE,
                }.get(name, _URL)
                if not ok.fullmatch(value):
                    raise OptionError(option, f"{where}{value!r} is not a valid value for {opt}")
                out.append(f"{name} {value}")
                continue
            if opt in ("-r", "--requirement", "-c", "--constraint"):
                raise OptionError(
                    option,
                    f"{where}nested requirement files ({opt}) are not supported; "
                    "put their lines in this file",
                )
            if opt in ("-e", "--editable"):
                raise OptionError(
                    option, f"{where}editable installs (-e) are not supported in a build"
                )
            raise OptionError(option, f"{where}the option {opt} is not supported")
        req_text, hashes = line, []
        for m in _HASH.finditer(line):
            hashes.append(f"--hash={m.group(0)[7:]}")
        req_text = _HASH.sub("", line).strip()
        if _URL.fullmatch(req_text):  # a bare URL (wheel, sdist or VCS)
            out.append(req_text)
            continue
        if req_text.startswith((".", "/", "~")) or "file:" in req_text:
            raise OptionError(
                option, f"{where}local paths are not in the build; use a URL or an index"
            )
        req = parse_pip(req_text, option, where)
        out.append(" ".join([req, *hashes]))
    return out


def parse_conda(text: str, source: str, option: str = "conda_file") -> str:
    """A conda environment file, normalised: environment `conjure`, sorted keys."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise OptionError(option, f"{source} is not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise OptionError(option, f"{source} is not a conda environment file (a mapping)")
    unknown = set(data) - {"name", "channels", "dependencies", "prefix", "variables"}
    if unknown:
        raise OptionError(
            option, f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
        )
    channels = data.get("channels") or ["conda-forge"]
    deps = data.get("dependencies") or []
    if not isinstance(channels, list) or not all(
        isinstance(c, str) and c and _printable(c) and " " not in c for c in channels
    ):
        raise OptionError(option, f"{source}: channels must be a list of names or URLs")
    if not isinstance(deps, list) or not deps:
        raise OptionError(option, f"{source}: dependencies must be a non-empty list")
    norm_deps: list[Any] = []
    for d in deps:
        if isinstance(d, str) and d.strip() and _printable(d):
            norm_deps.append(d.strip())
        elif isinstance(d, dict) and list(d) == ["pip"] and isinstance(d["pip"], list):
            norm_deps.append(
                {"pip": [parse_pip(str(p), option, f"{source} pip: ") for p in d["pip"]]}
            )
        else:
            raise OptionError(option, f"{source}: bad dependency {d!r}")
    variables = data.get("variables") or {}
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) and _printable(str(v))
        for k, v in variables.items()
    ):
        raise OptionError(option, f"{source}: variables must map names to values")
    norm: dict[str, Any] = {"name": "conjure", "channels": channels, "dependencies": norm_deps}
    if variables:
        norm["variables"] = {k: str(v) for k, v in variables.items()}
    return yaml.safe_dump(norm, sort_keys=True, default_flow_style=False)


def conda_channels(conda_text: str) -> list[str]:
    import yaml

    data = yaml.safe_load(conda_text) or {}
    return list(data.get("channels") or ["conda-forge"])


# --- frameworks ---------------------------------------------------------------------


@dataclass
class Framework:
    name: str
    description: str = ""
    pip: list[str] = field(default_factory=list)


def load_frameworks(config_file: Path | None = None) -> dict[str, Framework]:
    """The built-in frameworks, overridden or extended by `[frameworks.NAME]` in config."""
    raw = builtin_with_overrides(FRAMEWORKS_FILE, config_file, "frameworks")
    out = {}
    for name, fields in raw.items():
        fw = Framework(name=name, **fields)
        fw.pip = parse_requirements("\n".join(fw.pip), f"framework {name}", "framework")
        out[name] = fw
    return out


# --- the local environment (--deps-from-env) ----------------------------------------

_LIST_DISTS = r"""
import json, importlib.metadata as md
out = []
for d in md.distributions():
    name = d.metadata.get("Name")
    if not name:
        continue
    direct = d.read_text("direct_url.json") or ""
    out.append({"name": name, "version": d.version, "requires": d.requires or [],
                "editable": '"editable": true' in direct})
print(json.dumps(out))
"""


def _venv_top_level(venv: Path) -> list[str]:
    """Packages of a virtual environment that no other package requires (as pip-chill)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    python = venv / "bin" / "python"
    if not python.exists():
        raise OptionError("deps_from_env", f"{python} does not exist")
    proc = subprocess.run(
        [str(python), "-I", "-c", _LIST_DISTS], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise OptionError("deps_from_env", f"cannot list {venv}: {proc.stderr.strip()[-200:]}")
    dists = json.loads(proc.stdout)
    required: set[str] = set()
    for d in dists:
        for r in d["requires"]:
            try:
                req = Requirement(r)
            except InvalidRequirement:
                continue
            if req.marker is not None and "extra" in str(req.marker):
                continue  # only needed with an extra
            required.add(canonicalize_name(req.name))
    seen: set[str] = set()
    out = []
    for d in sorted(dists, key=lambda d: canonicalize_name(d["name"])):
        name = canonicalize_name(d["name"])
        if name in required or name in _PIP_ALWAYS or name in seen or d["editable"]:
            continue
        seen.add(name)
        out.append(f"{d['name']}=={d['version']}")
    return out


def _conda_from_history(prefix: str, environ: Mapping[str, str]) -> str:
    conda = environ.get("CONDA_EXE") or shutil.which("conda") or shutil.which("micromamba")
    if not conda:
        raise OptionError("deps_from_env", "a conda environment is active but conda is not found")
    proc = subprocess.run(
        [conda, "env", "export", "--from-history", "-p", prefix],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise OptionError("deps_from_env", f"conda env export failed: {proc.stderr.strip()[-200:]}")
    return proc.stdout


@dataclass
class LocalDeps:
    source: str  # what was read, for the user
    pip: list[str] = field(default_factory=list)
    conda_file: str = ""


def deps_from_env(environ: Mapping[str, str] | None = None) -> LocalDeps:
    """The active virtual environment's top-level packages, or the conda environment's
    explicitly installed ones (`conda env export --from-history`)."""
    env = os.environ if environ is None else environ
    if env.get("VIRTUAL_ENV"):
        venv = Path(env["VIRTUAL_ENV"])
        return LocalDeps(source=f"virtual environment {venv}", pip=_venv_top_level(venv))
    prefix = env.get("CONDA_PREFIX")
    if prefix:
        text = _conda_from_history(prefix, env)
        return LocalDeps(
            source=f"conda environment {prefix}", conda_file=parse_conda(text, "conda env export")
        )
    raise OptionError(
        "deps_from_env",
        "no virtual environment or conda environment is active "
        "(VIRTUAL_ENV and CONDA_PREFIX are unset)",
    )


# --- the whole environment ----------------------------------------------------------


def file_digest(path: Path | None) -> str:
    if path is None or not Path(path).is_file():
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _hash(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _named(registry: str, repository: str, tag: str) -> str:
    return f"{registry}/{repository}:{tag}" if registry else f"{repository}:{tag}"


def build_env_spec(
    *,
    base_image: str,
    docker_image: str | None = None,
    framework: str | None = None,
    apt: Sequence[str] = (),
    pip: Sequence[str] = (),
    pip_req: Path | None = None,
    conda_file: Path | None = None,
    local: LocalDeps | None = None,
    frameworks: Mapping[str, Framework] | None = None,
    registry: str = "",
    ca_digest: str = "",
) -> EnvSpec:
    """Validate the environment options and name the image; OptionError on any bad value."""
    if pip_req is not None and conda_file is not None:
        raise OptionError("pip_req", "{0} and {1} are mutually exclusive", also=["conda_file"])
    frameworks = frameworks if frameworks is not None else load_frameworks()
    fw_name = framework or "default"
    if fw_name not in frameworks:
        raise OptionError(
            "framework", f"unknown framework {fw_name!r}; known: {', '.join(frameworks)}"
        )
    fw = frameworks[fw_name]
    image = parse_image(docker_image) if docker_image else ""
    registry = parse_registry(registry)
    apt_norm = sorted({parse_apt(a) for a in apt})
    explicit_pip = [parse_pip(p) for p in pip]
    req_lines = parse_requirements(_read(pip_req, "pip_req"), str(pip_req)) if pip_req else []
    conda = parse_conda(_read(conda_file, "conda_file"), str(conda_file)) if conda_file else ""

    # --deps-from-env: overridden by explicit flags.
    env_pip: list[str] = []
    if local is not None:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name

        named = {canonicalize_name(Requirement(p).name) for p in explicit_pip}
        for line in req_lines:
            if not line.startswith("-") and not _URL.fullmatch(line.split()[0]):
                named.add(canonicalize_name(Requirement(line.split(" --hash")[0]).name))
        env_pip = [p for p in local.pip if canonicalize_name(Requirement(p).name) not in named]
        if local.conda_file and not conda and not req_lines:
            conda = local.conda_file
    pip_all = env_pip + explicit_pip

    base = image or base_image
    spec = EnvSpec(
        docker_image=image,
        framework=fw_name,
        framework_pip=list(fw.pip),
        apt=apt_norm,
        pip=pip_all,
        pip_req="\n".join(req_lines) + ("\n" if req_lines else ""),
        conda_file=conda,
    )
    common = {"v": RECIPE_VERSION, "base": base, "ca": ca_digest, "custom": bool(image)}
    if fw.pip:
        h = _hash({**common, "framework": fw_name, "framework_pip": fw.pip})
        spec.framework_tag = _named(registry, FRAMEWORK_REPOSITORY, f"{fw_name}-{h[:16]}")
    if apt_norm or pip_all or req_lines or conda:
        h = _hash(
            {
                **common,
                "framework": fw_name,
                "framework_pip": fw.pip,
                "apt": apt_norm,
                "pip": pip_all,
                "pip_req": spec.pip_req,
                "conda": conda,
            }
        )
        spec.tag = _named(registry, ENV_REPOSITORY, h[:24])
    elif spec.framework_tag:
        spec.tag = spec.framework_tag
    elif image:
        spec.tag = ""  # the custom image as it is
    return spec


def run_image(spec: EnvSpec, base_image: str) -> str:
    """The image the run's command runs in."""
    return spec.tag or spec.docker_image or base_image
