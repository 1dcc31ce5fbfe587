"""Environment flags, client side: validation, normal forms, the image tag, the build
plan, --deps-from-env on a real virtual environment. No stack needed except for the
CLI checks, which go through the real `conjure` entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conjure.infra.config import Settings
from conjure.infra.env_build import plan_build
from conjure.infra.environment import (
    LocalDeps,
    build_env_spec,
    deps_from_env,
    load_frameworks,
    parse_apt,
    parse_conda,
    parse_image,
    parse_pip,
    parse_requirements,
)
from conjure.infra.errors import UsageError
from tests.conftest import conjure

BASE = "conjure/base:bookworm"


@pytest.mark.parametrize("value", ["ffmpeg\nRUN rm -rf /", "A", "x", "-y", "ffmpeg;rm", "pkg=abc", "ffmpeg "
                                   "x"])  # fmt: skip
def test_apt_names_follow_debian_rules(value: str) -> None:
    with pytest.raises(UsageError, match="not a Debian package name"):
        parse_apt(value)


def test_apt_good_names() -> None:
    assert parse_apt("libprotobuf-dev") == "libprotobuf-dev"
    assert parse_apt("g++") == "g++"
    assert parse_apt("python3.11=3.11.2-6") == "python3.11=3.11.2-6"


@pytest.mark.parametrize(
    "value", ["six\nRUN rm -rf /", "-e .", "six>=", "--index-url=x", "", "a b"]
)
def test_pip_requirements_must_parse(value: str) -> None:
    with pytest.raises(UsageError, match="not a pip requirement"):
        parse_pip(value)


def test_pip_normal_form() -> None:
    assert parse_pip("Pillow>=8.3.2") == "Pillow>=8.3.2"
    assert parse_pip("requests[socks] >= 2 ; python_version>'3'") == (
        'requests[socks]>=2; python_version > "3"'
    )


def test_requirements_file_normalised_and_checked() -> None:
    text = (
        "# comment\n"
        "six==1.16.0   # pinned\n"
        "\n"
        "--index-url https://pypi.org/simple\n"
        "-i=https://pypi.org/simple\n"
        "numpy>=1.26 \\\n"
        "    --hash=sha256:abcdef\n"
        "--pre\n"
    )
    assert parse_requirements(text, "r.txt") == [
        "six==1.16.0",
        "--index-url https://pypi.org/simple",
        "--index-url https://pypi.org/simple",
        "numpy>=1.26 --hash=sha256:abcdef",
        "--pre",
    ]
    for bad, msg in [
        ("-r other.txt\n", "nested requirement files"),
        ("-e .\n", "editable"),
        ("./local_pkg\n", "local paths"),
        ("--index-url 'https://x y'\n", "not a valid value"),
        ("--global-option=x\n", "not supported"),
        ("six>=\n", "line 1"),
    ]:
        with pytest.raises(UsageError, match=msg):
            parse_requirements(bad, "r.txt")


def test_conda_file_normalised() -> None:
    text = "name: mine\nprefix: /home/me/env\ndependencies:\n  - python=3.11\n  - pip:\n    - six\n"
    norm = parse_conda(text, "env.yml")
    assert "name: conjure" in norm and "conda-forge" in norm and "prefix" not in norm
    for bad, msg in [
        ("{{nope", "not valid YAML"),
        ("- a\n", "a mapping"),
        ("dependencies: []\n", "non-empty"),
        ("dependencies: [python]\nfoo: 1\n", "unknown key"),
        ("dependencies:\n  - pip: ['six\\nRUN x']\n", "not a pip requirement"),
    ]:
        with pytest.raises(UsageError, match=msg):
            parse_conda(bad, "env.yml")


def test_image_references() -> None:
    assert parse_image("python:3.11-slim") == "python:3.11-slim"
    assert parse_image("127.0.0.1:5000/team/img:1") == "127.0.0.1:5000/team/img:1"
    for bad in ["UPPER/case", "img:tag\nRUN x", "a b", "img::1", ""]:
        with pytest.raises(UsageError, match="not a Docker image reference"):
            parse_image(bad)


def test_tag_is_a_hash_of_the_normalised_environment(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("six==1.16.0\n")
    a = build_env_spec(base_image=BASE, pip=["Pillow>=8.3.2"], pip_req=req, apt=["jq", "curl"])
    assert a.tag.startswith("conjure/env:") and a.pip_req == "six==1.16.0\n"
    # the same environment, spelled differently: same tag
    req.write_text("# a comment\nsix == 1.16.0\n")
    b = build_env_spec(
        base_image=BASE, pip=["Pillow >= 8.3.2"], pip_req=req, apt=["curl", "jq", "jq"]
    )
    assert b.tag == a.tag
    # one line of requirements.txt changed: another image
    req.write_text("six==1.15.0\n")
    c = build_env_spec(base_image=BASE, pip=["Pillow>=8.3.2"], pip_req=req, apt=["jq", "curl"])
    assert c.tag != a.tag
    # the CA bundle, the base image and the registry are part of the name
    assert (
        build_env_spec(base_image=BASE, pip=["six"], ca_digest="1").tag
        != build_env_spec(base_image=BASE, pip=["six"], ca_digest="2").tag
    )
    assert build_env_spec(base_image=BASE, pip=["six"], docker_image="python:3").tag != (
        build_env_spec(base_image=BASE, pip=["six"]).tag
    )
    assert build_env_spec(base_image=BASE, pip=["six"], registry="127.0.0.1:5000").tag.startswith(
        "127.0.0.1:5000/conjure/env:"
    )
    # nothing asked for: the base image as it is
    empty = build_env_spec(base_image=BASE)
    assert empty.tag == "" and empty.framework == "default"


def test_framework_catalog_and_tags() -> None:
    cat = load_frameworks()
    assert {"default", "numpy", "sklearn", "pytorch", "tensorflow"} <= set(cat)
    assert cat["default"].pip == []
    fw = build_env_spec(base_image=BASE, framework="numpy")
    assert fw.framework_tag.startswith("conjure/framework:numpy-") and fw.tag == fw.framework_tag
    on_top = build_env_spec(base_image=BASE, framework="numpy", pip=["six"])
    assert on_top.framework_tag == fw.framework_tag and on_top.tag.startswith("conjure/env:")
    with pytest.raises(UsageError, match="unknown framework 'nope'"):
        build_env_spec(base_image=BASE, framework="nope")


def test_pip_req_and_conda_file_exclusive(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("six\n")
    (tmp_path / "e.yml").write_text("dependencies: [python]\n")
    with pytest.raises(UsageError, match="mutually exclusive"):
        build_env_spec(base_image=BASE, pip_req=tmp_path / "r.txt", conda_file=tmp_path / "e.yml")
    with pytest.raises(UsageError, match="does not exist"):
        build_env_spec(base_image=BASE, pip_req=tmp_path / "missing.txt")


def test_dockerfile_is_constant_whatever_the_values() -> None:
    """User values go to data files; the Dockerfile text depends only on which flags are set."""
    a = plan_build(apt=["jq"], requirements="six\n", pip=["six==1.17.0"])
    b = plan_build(apt=["ffmpeg", "curl"], requirements="numpy\n--pre\n", pip=["Pillow>=8.3.2"])
    assert a.dockerfile == b.dockerfile
    assert a.files["conjure/apt.txt"] == b"jq\n"
    assert a.files["conjure/pip.txt"] == b"six==1.17.0\n"
    # --pip-req is installed before --pip, so --pip wins
    df = a.dockerfile
    assert df.index("requirements.txt") < df.index("pip.txt")
    conda = plan_build(conda_file="name: conjure\n").dockerfile
    assert "micromamba create -y -n conjure -f /tmp/conjure/environment.yml" in conda
    assert "fetch_micromamba.py" in conda and "/opt/conda/envs/conjure/bin" in conda


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real virtual environment with python-dateutil (which requires six)."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "python-dateutil"],
        check=True,
        capture_output=True,
    )
    return root


def test_deps_from_venv_lists_top_level_packages(venv: Path) -> None:
    deps = deps_from_env({"VIRTUAL_ENV": str(venv)})
    names = [p.split("==")[0].lower() for p in deps.pip]
    assert names == ["python-dateutil"]  # six is a dependency of it; pip itself is left out
    assert all("==" in p for p in deps.pip)


def test_deps_from_env_overridden_by_explicit_flags(tmp_path: Path) -> None:
    local = LocalDeps(source="test", pip=["six==1.16.0", "python-dateutil==2.9.0"])
    spec = build_env_spec(base_image=BASE, pip=["six==1.17.0"], local=local)
    assert spec.pip == ["python-dateutil==2.9.0", "six==1.17.0"]
    req = tmp_path / "r.txt"
    req.write_text("python-dateutil==2.8.2\n")
    spec = build_env_spec(base_image=BASE, pip_req=req, local=local)
    assert spec.pip == ["six==1.16.0"] and spec.pip_req == "python-dateutil==2.8.2\n"
    conda_local = LocalDeps(source="t", conda_file=parse_conda("dependencies: [python]\n", "x"))
    assert build_env_spec(base_image=BASE, local=conda_local).conda_file
    assert not build_env_spec(base_image=BASE, local=conda_local, pip_req=req).conda_file


def test_deps_from_conda_env(tmp_path: Path) -> None:
    """conda itself cannot be installed here (no channel is reachable): a stand-in `conda`
    script prints what `conda env export --from-history` prints, and the test says so."""
    fake = tmp_path / "conda"
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2 $3" = "env export --from-history" ] || exit 9\n'
        "printf 'name: proj\\nchannels:\\n  - conda-forge\\ndependencies:\\n  - numpy\\n"
        "prefix: /opt/envs/proj\\n'\n"
    )
    fake.chmod(0o755)
    deps = deps_from_env({"CONDA_PREFIX": "/opt/envs/proj", "CONDA_EXE": str(fake)})
    assert "numpy" in deps.conda_file and "name: conjure" in deps.conda_file


def test_deps_from_env_without_env() -> None:
    with pytest.raises(UsageError, match="no virtual environment or conda environment"):
        deps_from_env({})


# --- through the real entry point: exit code 2, one line, nothing started ------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--apt", "ffmpeg\nRUN rm -rf /"], "--apt 'ffmpeg\\nRUN rm -rf /': contains a control character"),
        (["--pip", "six\nRUN rm -rf /"], "--pip 'six\\nRUN rm -rf /': contains a control character"),
        (["--pip", "Pillow>="], "--pip: Pillow>= is not a pip requirement"),
        (["--pip-req", "missing.txt"], "--pip-req: missing.txt does not exist"),
        (["--pip-req", "nested.txt"], "nested requirement files"),
        (["--conda-file", "bad.yml"], "is not valid YAML"),
        (["--conda-file", "env.yml", "--pip-req", "req.txt"], "mutually exclusive"),
        (["--framework", "nope"], "unknown framework 'nope'"),
        (["--docker-image", "Not An Image"], "is not a Docker image reference"),
        (["--docker-image", "nosuch.invalid/conjure/none:1"],
         "nosuch.invalid/conjure/none:1 is neither on this machine nor pullable"),
    ],
)  # fmt: skip
def test_bad_environment_flags_exit_2(
    conjure_stack: Settings, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "nested.txt").write_text("-r other.txt\n")
    (tmp_path / "bad.yml").write_text("{{nope\n")
    (tmp_path / "env.yml").write_text("dependencies: [python]\n")
    (tmp_path / "req.txt").write_text("six\n")
    r = conjure("run", *args, "echo hi", cwd=tmp_path)
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r
    assert message in lines[0], r
    assert "Casting" not in r.err and "Traceback" not in r.err


def test_frameworks_command(conjure_stack: Settings) -> None:
    r = conjure("frameworks")
    assert r.code == 0, r
    for name in ("default", "numpy", "sklearn", "pytorch", "tensorflow"):
        assert name in r.out
    js = conjure("frameworks", "--json")
    assert any(f["name"] == "numpy" and f["pip"] for f in __import__("json").loads(js.out))


def test_errors_name_the_python_api_option_and_the_cli_words_its_flag(tmp_path: Path) -> None:
    from conjure.cli.wording import error_message
    from conjure.infra.errors import OptionError

    with pytest.raises(OptionError) as bad:
        parse_pip("Pillow>=")
    assert bad.value.option == "pip"
    assert str(bad.value).startswith("pip: Pillow>= is not a pip requirement")
    assert error_message(bad.value).startswith("--pip: Pillow>= is not a pip requirement")
    with pytest.raises(OptionError) as both:
        build_env_spec(
            base_image="b", pip_req=tmp_path / "r.txt", conda_file=tmp_path / "e.yml",
            frameworks={},
        )  # fmt: skip
    assert str(both.value) == "pip_req and conda_file are mutually exclusive"
    assert error_message(both.value) == "--pip-req and --conda-file are mutually exclusive"
