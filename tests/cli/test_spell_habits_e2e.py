"""A former Spell user's habits, end to end through the real `conjure` entry point
against the real stack (Temporal dev server, control worker, local machine, Docker):
`python`/`pip` in every image, runs that are git checkouts, the uncommitted diff."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conjure.infra.config import Settings
from tests.cli.test_run_e2e import git, run_id_of, status
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
    # The build's lines (built, or found cached) come before the run's start.
    assert (
        r.err.index("[conjure] ") < r.err.index("Building… done") < r.err.index("Run is running")
    ), r.err
    image = status(run_id_of(r.err))["image"]
    inside = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", "command -v python; command -v pip"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert inside == ["/usr/local/bin/python", "/usr/bin/pip"], inside


def test_run_is_a_git_checkout_and_its_diff_downloadable(
    conjure_stack: Settings, tmp_path: Path
) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("print('committed')\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "the commit message")
    head = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=repo, text=True).strip()

    clean = conjure("run", "git log -n 1 --format=%H:%s | cat; git status --porcelain", cwd=repo)
    assert clean.code == 0, clean
    assert clean.out == f"{head}:the commit message\n", clean
    n = run_id_of(clean.err)
    assert "uncommitted:  none" in conjure("status", str(n)).out
    none = conjure("diff", str(n))
    assert none.code == 0 and none.out == "" and "no uncommitted changes" in none.err
    assert f"code/git/{head}.pack" not in conjure("ls", f"runs/{n}").out  # .git is no output

    (repo / "train.py").write_text("print('uncommitted')\n")
    dirty = conjure("run", "git status --porcelain; git diff --stat | cat; python train.py",
                    cwd=repo)  # fmt: skip
    assert dirty.code == 0, dirty
    assert dirty.out.splitlines()[0] == " M train.py", dirty
    assert "train.py | 2 +-" in dirty.out and dirty.out.endswith("uncommitted\n")
    m = run_id_of(dirty.err)
    st = status(m)
    assert st["spec"]["code"]["commit"] == head
    human = conjure("status", str(m)).out
    assert f"uncommitted:  yes (`conjure diff {m}`" in human, human
    d = conjure("diff", str(m))
    assert d.code == 0 and "-print('committed')\n+print('uncommitted')" in d.out, d
    key = st["spec"]["code"]["patch_key"]
    cp = conjure("cp", key, str(tmp_path / "changes.patch"))
    assert cp.code == 0, cp
    assert (tmp_path / "changes.patch").read_text() == d.out
    assert conjure("rm", key).code == 2  # readable, never removable
    missing = conjure("diff", "999999")
    assert missing.code == 1 and "does not exist" in missing.err and "Traceback" not in missing.err


def test_force_asks_nothing_about_untracked_files(conjure_stack: Settings, tmp_path: Path) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "a")
    (repo / "scratch.txt").write_text("untracked\n")
    (repo / "a.txt").write_text("changed\n")
    asked = conjure("run", "cat a.txt", cwd=repo)
    assert asked.code == 0 and "untracked file(s)" in asked.err, asked
    forced = conjure("run", "-f", "cat a.txt", cwd=repo)
    assert forced.code == 0 and forced.out == "changed\n", forced
    assert "untracked" not in forced.err and "⚠️" not in forced.err, forced


def test_python_api_as_spell_users_knew_it(conjure_stack: Settings, tmp_path: Path) -> None:
    from conjure import Conjure, RunState
    from conjure.infra.errors import RunFailedError

    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('from code_dir')\nopen('out.txt', 'w').write('x')\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "t")
    with Conjure() as c:
        first = c.run("python train.py", code_dir=repo, pip=["six"])
        assert first.wait_status(RunState.RUNNING).state in (RunState.RUNNING, RunState.SAVING,
                                                              RunState.PUSHING, RunState.COMPLETE)  # fmt: skip
        assert first.wait(check=True).state == RunState.COMPLETE
        program = [ln.text for ln in first.logs(program_only=True)]
        assert program == ["from code_dir"], program  # no build lines, no notes
        assert len(list(first.logs())) > len(program)
        second = c.run(
            "cat /data/input.txt", mounts={f"runs/{first.id}/out.txt": "/data/input.txt"}
        )
        assert second.wait(state=RunState.COMPLETE).state == RunState.COMPLETE
        assert [ln.text for ln in second.logs(program_only=True)] == ["x"]
        failing = c.run("exit 4")
        try:
            failing.wait(check=True)
            raise AssertionError("wait(check=True) did not raise")
        except RunFailedError as e:
            assert e.status.state == RunState.FAILED and e.status.exit_code == 4
        # wait_status by a new handle: the failed run passed through Saving.
        assert c.get(failing.id).wait_status(RunState.SAVING).state == RunState.FAILED
