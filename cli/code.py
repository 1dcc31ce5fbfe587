"""Packaging the user's code: the committed tree plus uncommitted changes.

The run's commit goes to the store as a git pack of that one commit and its whole
tree, `code/git/<commit>.pack` (keyed by the commit id, so a commit is uploaded
once); the machine makes a shallow repository of it, checks it out, and applies the
uncommitted changes to tracked files, `code/<sha256>.patch` (`git diff HEAD
--binary`), as changes: inside the run `git log` shows the user's commit and `git
status`/`git diff` the uncommitted changes.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conjure.infra.errors import ConjureError
from conjure.infra.store import Store, StoreError
from conjure.workflows.models import CodeSpec

UNTRACKED = "untracked file(s)"


def asks_about_files(warning: str) -> bool:
    """A warning Spell asked as a question (untracked files left out), which
    `conjure run -f/--force` skips."""
    return f" {UNTRACKED} " in warning


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
    branch = (
        _git(root, "symbolic-ref", "-q", "--short", "HEAD", check=False).stdout.decode().strip()
    )
    out = Packaged(
        CodeSpec(repo_name=root.name, relative_cwd=rel, commit=commit, branch=branch or None)
    )

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
            f"{len(untracked)} {UNTRACKED} will not be in the run: {shown} (git add them to include them)"
        )

    patch = _git(root, "diff", "HEAD", "--binary").stdout
    if patch and not include_uncommitted:
        raise ConjureError(
            "the repository has uncommitted changes and include_uncommitted is false: "
            "commit or stash them first"
        )

    _pack(store, root, commit, out)
    with tempfile.TemporaryDirectory(prefix="conjure-code-") as tmp:
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


def git_pack_key(commit: str) -> str:
    return f"code/git/{commit}.pack"


def _pack(store: Store, repo: Path, commit: str, out: Packaged) -> None:
    """Upload a pack of `commit` and every object of its tree (not its history), once."""
    key = git_pack_key(commit)
    out.code.git_key = key
    if store.exists(key):
        return
    objects = _git(repo, "rev-list", "--objects", "--max-count=1", commit).stdout
    with tempfile.TemporaryDirectory(prefix="conjure-code-") as tmp:
        pack = Path(tmp) / "code.pack"
        try:
            with open(pack, "wb") as fh:
                proc = subprocess.run(
                    ["git", "pack-objects", "--stdout", "-q"],
                    cwd=repo,
                    input=objects,
                    stdout=fh,
                    stderr=subprocess.PIPE,
                )
        except FileNotFoundError:
            raise ConjureError("git is not installed") from None
        if proc.returncode != 0:
            raise ConjureError(f"git pack-objects failed: {proc.stderr.decode().strip()}")
        store.put_file(pack, key)
    out.uploaded.append(key)


def _package_commit(store: Store, root: Path, rel: str, ref: str) -> Packaged:
    """--commit-ref: the tree of that commit of the local repository, nothing uncommitted."""
    commit = _resolve(root, ref, "--commit-ref")
    if commit is None:
        raise ConjureError(f"--commit-ref {ref}: no such commit in {root}")
    out = Packaged(CodeSpec(repo_name=root.name, relative_cwd=rel, commit=commit, ref=ref))
    _pack(store, root, commit, out)
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
            raise ConjureError(f"--github-url {url}: git clone failed: {clone_error(proc.stderr)}")
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
        _pack(store, repo, commit, out)
    return out


def clone_error(stderr: bytes) -> str:
    """git's whole message (every line that says something), not only its last line."""
    lines = [
        ln.strip()
        for ln in stderr.decode(errors="replace").splitlines()
        if ln.strip() and not ln.startswith("Cloning into")
    ]
    return "; ".join(lines) if lines else "no message from git"


def run_diff(store: Store, code: CodeSpec) -> bytes | None:
    """The uncommitted changes a run was submitted with (`git diff HEAD --binary`), or
    None when it had none."""
    if not code.patch_key:
        return None
    try:
        return store.read_bytes(code.patch_key)
    except StoreError:
        raise ConjureError(f"the run's diff {code.patch_key} is missing from the store") from None
