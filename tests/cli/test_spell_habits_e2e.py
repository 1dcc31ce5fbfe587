"""A former Spell user's habits, end to end through the real `conjure` entry point
against the real stack (Temporal dev server, control worker, local machine, Docker):
`python`/`pip` in every image."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conjure.infra.config import Settings
from tests.cli.test_run_e2e import run_id_of, status
from tests.conftest import conjure

PY = "python -c 'import sys; print(sys.version_info[0])' && pip --version"


def test_python_and_pip_on_the_base_and_built_images(
    conjure_stack: Settings, tmp_path: Path
) -> None:
    # The base image as it is (its python3 only: the run's shims), and as --docker-image.
    for extra in ([], ["--docker-image", conjure_stack.base_image]):
        r = conjure("run", *extra, PY, cwd=tmp_path)
        assert r.code == 0, r
        three, pip = r.out.splitlines()
        assert three == "3" and pip.startswith("pip ") and "python 3" in pip, r
    # A --pip environment: the image Conjure builds has them itself.
    r = conjure("run", "--pip", "six", f"python -c 'import six' && {PY}", cwd=tmp_path)
    assert r.code == 0, r
    assert r.out.splitlines()[0] == "3"
    image = status(run_id_of(r.err))["image"]
    inside = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", "command -v python; command -v pip"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert inside == ["/usr/local/bin/python", "/usr/bin/pip"], inside
