"""Runs are git checkouts: the code a run gets is a git repository at the user's commit
with the uncommitted changes applied as changes (real git, a local file store)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conjure.activities.machine import MachineActivities
from conjure.cli.code import clone_error, package_code, package_github
from conjure.infra.config import Settings
from conjure.infra.errors import ConjureError
from conjure.infra.store import open_store
from conjure.workflows.models import PrepareInput


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.rstrip()  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "proj"
    (r / "src").mkdir(parents=True)
    git(r, "init", "-q", "-b", "main")
    (r / "train.py").write_text("print('v1')\n")
    (r / "src" / "data.txt").write_text("one\n")
    (r / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (r / "run.sh").chmod(0o755)
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "first")
    (r / "train.py").write_text("print('v2')\n")
    git(r, "commit", "-q", "-am", "second")
    return r


def prepare(tmp_path: Path, store_dir: Path, code) -> Path:  # type: ignore[no-untyped-def]
    store = open_store(f"file://{store_dir}")
    acts = MachineActivities(Settings(), "m-test", store, None, tmp_path / "machine")  # type: ignore[arg-type]
    res = acts._prepare_workspace(PrepareInput(run_id=7, code=code))
    return Path(acts.host_path(7, res.workdir))


def test_run_is_a_checkout_with_uncommitted_changes(tmp_path: Path, repo: Path) -> None:
    (repo / "train.py").write_text("print('v3 uncommitted')\n")
    (repo / "src" / "new.txt").write_text("added\n")
    git(repo, "add", "src/new.txt")
    store_dir = tmp_path / "store"
    packed = package_code(open_store(f"file://{store_dir}"), repo / "src", include_uncommitted=True)
    head = git(repo, "rev-parse", "HEAD")
    assert packed.code.commit == head and packed.code.git_key == f"code/git/{head}.pack"
    assert packed.code.patch_key and packed.code.branch == "main"

    workdir = prepare(tmp_path, store_dir, packed.code)
    root = workdir.parent
    assert workdir.name == "src" and root.name == "proj"
    assert git(root, "rev-parse", "HEAD") == head  # the user's commit id
    assert git(root, "log", "-n", "1", "--format=%s") == "second"
    assert git(root, "branch", "--show-current") == "main"
    assert (root / "train.py").read_text() == "print('v3 uncommitted')\n"
    assert (root / "run.sh").stat().st_mode & 0o111
    assert git(root, "status", "--porcelain").splitlines() == [" M train.py", "?? src/new.txt"]
    assert "+print('v3 uncommitted')" in git(root, "diff")


def test_commit_ref_and_github_url_are_checkouts(tmp_path: Path, repo: Path) -> None:
    store_dir = tmp_path / "store"
    store = open_store(f"file://{store_dir}")
    first = git(repo, "rev-parse", "HEAD~1")
    packed = package_code(store, repo, include_uncommitted=True, commit_ref="HEAD~1")
    root = prepare(tmp_path, store_dir, packed.code)
    assert git(root, "rev-parse", "HEAD") == first
    assert git(root, "status", "--porcelain") == ""
    assert (root / "train.py").read_text() == "print('v1')\n"

    gh = package_github(store, f"file://{repo}", "main")
    root = prepare(tmp_path / "again", store_dir, gh.code)
    assert (
        git(root, "log", "-n", "1", "--format=%H %s") == f"{git(repo, 'rev-parse', 'HEAD')} second"
    )
    assert git(root, "status", "--porcelain") == ""


def test_failed_clone_shows_gits_whole_message(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'store'}")
    with pytest.raises(ConjureError) as e:
        package_github(store, f"file://{tmp_path}/missing")
    msg = str(e.value)
    # git says what went wrong over two lines; both are kept.
    assert "does not appear to be a git repository" in msg
    assert "Could not read from remote repository" in msg or "Please make sure" in msg
    assert clone_error(b"Cloning into 'x'...\nfatal: a\nfatal: b\n") == "fatal: a; fatal: b"
