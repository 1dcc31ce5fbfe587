"""Packaging the user's code: the committed tree plus uncommitted changes.

The tree of HEAD goes to the store as `code/<sha256>.tar.gz` (`git archive`),
the uncommitted changes to tracked files as `code/<sha256>.patch` (`git diff
HEAD --binary`). Both are content-addressed, so an unchanged commit is uploaded
once.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conjure.infra.errors import ConjureError
from conjure.infra.store import Store
from conjure.workflows.models import CodeSpec


@dataclass
class Packaged:
    code: CodeSpec
    warnings: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True)
    except FileNotFoundError:
        raise ConjureError("git is not installed") from None
    if check and proc.returncode != 0:
        raise ConjureError(f"git {' '.join(args)} failed: {proc.stderr.decode().strip()}")
    return proc


def repo_root(cwd: Path) -> Path | None:
    proc = _git(cwd, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        return None
    return Path(proc.stdout.decode().strip())


def package_code(
    store: Store, cwd: Path, *, include_uncommitted: bool, commit_ref: str | None = None
) -> Packaged:
    root = repo_root(cwd)
    if root is None:
        if commit_ref:
            raise ConjureError(f"--commit-ref {commit_ref}: {cwd} is not in a git repository")
        return Packaged(CodeSpec())  # outside a repository: an empty working directory
    if _git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
        raise ConjureError(
            f"the git repository at {root} has no commit yet: commit your code first"
        )
    rel = _git(cwd, "rev-parse", "--show-prefix").stdout.decode().strip().strip("/")
    if commit_ref:
        return _package_commit(store, root, rel, commit_ref)
    commit = _git(root, "rev-parse", "HEAD").stdout.decode().strip()
    out = Packaged(CodeSpec(repo_name=root.name, relative_cwd=rel, commit=commit))

    untracked = [
        line
        for line in _git(root, "ls-files", "--others", "--exclude-standard", "-z")
        .stdout.decode()
        .split("\0")
        if line
    ]
    if untracked:
        shown = ", ".join(untracked[:10]) + (
            f" and {len(untracked) - 10} more" if len(untracked) > 10 else ""
        )
        out.warnings.append(
            f"{len(untracked)} untracked file(s) will not be in the run: {shown} (git add them to include them)"
        )

    patch = _git(root, "diff", "HEAD", "--binary").stdout
    if patch and not include_uncommitted:
        raise ConjureError(
            "the repository has uncommitted changes and include_uncommitted is false: "
            "commit or stash them first"
        )

    with tempfile.TemporaryDirectory(prefix="conjure-code-") as tmp:
        archive = Path(tmp) / "code.tar.gz"
        _git(root, "archive", "--format=tar.gz", "-o", str(archive), "HEAD")
        key, uploaded = store.put_content_addressed(archive, "code", ".tar.gz")
        out.code.archive_key = key
        if uploaded:
            out.uploaded.append(key)
        if patch:
            pfile = Path(tmp) / "changes.patch"
            pfile.write_bytes(patch)
            key, uploaded = store.put_content_addressed(pfile, "code", ".patch")
            out.code.patch_key = key
            if uploaded:
                out.uploaded.append(key)
    return out


def _resolve(repo: Path, ref: str, what: str) -> str | None:
    for candidate in (ref, f"origin/{ref}"):
        proc = _git(repo, "rev-parse", "--verify", "-q", f"{candidate}^{{commit}}", check=False)
        if proc.returncode == 0:
            return proc.stdout.decode().strip()
    return None


def _archive(store: Store, repo: Path, commit: str, out: Packaged) -> None:
    with tempfile.TemporaryDirectory(prefix="conjure-code-") as tmp:
        archive = Path(tmp) / "code.tar.gz"
        _git(repo, "archive", "--format=tar.gz", "-o", str(archive), commit)
        key, uploaded = store.put_content_addressed(archive, "code", ".tar.gz")
        out.code.archive_key = key
        if uploaded:
            out.uploaded.append(key)


def _package_commit(store: Store, root: Path, rel: str, ref: str) -> Packaged:
    """--commit-ref: the tree of that commit of the local repository, nothing uncommitted."""
    commit = _resolve(root, ref, "--commit-ref")
    if commit is None:
        raise ConjureError(f"--commit-ref {ref}: no such commit in {root}")
    out = Packaged(CodeSpec(repo_name=root.name, relative_cwd=rel, commit=commit, ref=ref))
    _archive(store, root, commit, out)
    return out


def package_github(store: Store, url: str, ref: str | None = None) -> Packaged:
    """--github-url [--github-ref]: the tree of that repository at ref (default: the
    default branch's HEAD). The run's working directory is the repository root."""
    import os

    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    with tempfile.TemporaryDirectory(prefix="conjure-clone-") as tmp:
        repo = Path(tmp) / "repo"
        try:
            proc = subprocess.run(
                ["git", "clone", "--quiet", "--no-checkout", url, str(repo)],
                capture_output=True,
                env=env,
            )
        except FileNotFoundError:
            raise ConjureError("git is not installed") from None
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ConjureError(f"--github-url {url}: git clone failed: {msg[-1] if msg else ''}")
        commit = _resolve(repo, ref or "HEAD", "--github-ref")
        if commit is None and ref:
            # A ref not among the cloned branches and tags (e.g. refs/pull/1/head).
            fetched = _git(repo, "fetch", "--quiet", "origin", ref, check=False)
            if fetched.returncode == 0:
                commit = _resolve(repo, "FETCH_HEAD", "--github-ref")
        if commit is None:
            raise ConjureError(
                f"--github-ref {ref}: no such branch, tag or commit in {url}"
                if ref
                else f"--github-url {url}: the repository has no commit"
            )
        out = Packaged(CodeSpec(commit=commit, github_url=url, ref=ref))
        _archive(store, repo, commit, out)
    return out
