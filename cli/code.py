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

from infra.errors import ConjureError
from infra.store import Store
from workflows.models import CodeSpec


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


def package_code(store: Store, cwd: Path, *, include_uncommitted: bool) -> Packaged:
    root = repo_root(cwd)
    if root is None:
        return Packaged(CodeSpec())  # outside a repository: an empty working directory
    if _git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
        raise ConjureError(
            f"the git repository at {root} has no commit yet: commit your code first"
        )
    rel = _git(cwd, "rev-parse", "--show-prefix").stdout.decode().strip().strip("/")
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
        shown = ", ".join(untracked[:10]) + (f" and {len(untracked) - 10} more" if len(untracked) > 10 else "")
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
