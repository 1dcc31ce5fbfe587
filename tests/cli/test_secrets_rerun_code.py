"""Secrets, reruns and code from git, end to end through the real `conjure` entry
point against the real stack (Temporal dev server, control worker, local machine, Docker)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

from conjure.infra.config import Settings
from conjure.infra.logs import LogWriter
from conjure.infra.secrets import REDACTED, split_env
from conjure.infra.stack import temporal_binary
from conjure.infra.store import open_store
from tests.cli.test_run_e2e import git, run_id_of, status
from tests.conftest import conjure

SECRET = "hunter2-s3cr3t-value"


def workflow_history(settings: Settings, workflow_id: str) -> str:
    proc = subprocess.run(
        [temporal_binary(), "workflow", "show", "--address", settings.address,
         "--namespace", settings.temporal_namespace, "-w", workflow_id, "--output", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) > 1000  # a real history, not an error message
    # Payloads are base64 in this JSON (as the Web UI gets them): decode every one.
    decoded: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "data" and isinstance(v, str):
                    decoded.append(base64.b64decode(v).decode(errors="replace"))
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(proc.stdout))
    assert any('"command"' in d for d in decoded)  # the run's input, decoded
    return proc.stdout + "\n".join(decoded)


def test_split_env_and_log_writer_redact(tmp_path: Path) -> None:
    shown, secret = split_env({"SECRET_KEY": "abc", "SECRETS": "x1", "PLAIN": "abc"})
    assert shown == {"SECRET_KEY": REDACTED, "SECRETS": REDACTED, "PLAIN": "abc"}
    assert secret == {"SECRET_KEY": "abc", "SECRETS": "x1"}
    store = open_store(f"file://{tmp_path}")
    w = LogWriter(store, 1, "run", redact=["abc", "abcdef"])
    w.add("o", "key=abcdef and abc")
    w.close()
    (chunk,) = store.ls("logs/1")
    assert json.loads(store.read_bytes(chunk.key))["l"] == f"key={REDACTED} and {REDACTED}"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


# The program proves it got the real value by printing its hash; the command itself
# must not hold the value (it is in history as the run's command).
SHOW = 'echo "token=$SECRET_TOKEN plain=$PLAIN"; printf %s "$SECRET_TOKEN" | sha256sum | cut -c1-16'


def test_secret_redacted_everywhere_and_rerun(conjure_stack: Settings, tmp_path: Path) -> None:
    r = conjure("run", "-e", f"SECRET_TOKEN={SECRET}", "-e", "PLAIN=ok", SHOW, cwd=tmp_path)
    assert r.code == 0, r
    assert r.out == f"token={REDACTED} plain=ok\n{digest(SECRET)}\n", r
    n = run_id_of(r.err)
    st = conjure("status", str(n), "--json")
    assert st.code == 0 and SECRET not in st.out
    assert json.loads(st.out)["spec"]["env"]["SECRET_TOKEN"] == REDACTED
    human = conjure("status", str(n))
    assert f"SECRET_TOKEN={REDACTED}" in human.out and SECRET not in human.out
    logs = conjure("logs", str(n))
    assert f"token={REDACTED}" in logs.out and SECRET not in logs.out + logs.err
    ls = conjure("ls", "--json")
    assert ls.code == 0 and SECRET not in ls.out
    history = workflow_history(conjure_stack, f"run-{n}")
    assert SECRET not in history and REDACTED in history
    assert conjure("cp", "secrets", str(tmp_path / "x")).code == 1

    # A rerun does not carry the secret over: it is <REDACTED> until given again.
    again = conjure("rerun", str(n), cwd=tmp_path)
    assert again.code == 0, again
    assert "SECRET_TOKEN not given again" in again.err
    assert again.out == f"token={REDACTED} plain=ok\n{digest(REDACTED)}\n"
    m = run_id_of(again.err)
    assert m != n and SECRET not in conjure("status", str(m), "--json").out

    given = conjure("rerun", str(n), "-e", f"SECRET_TOKEN={SECRET}", "-e", "PLAIN=changed",
                    cwd=tmp_path)  # fmt: skip
    assert given.code == 0, given
    assert given.out == f"token={REDACTED} plain=changed\n{digest(SECRET)}\n"
    assert SECRET not in workflow_history(conjure_stack, f"run-{run_id_of(given.err)}")

    other = conjure("rerun", str(n), "-e", "SECRET_TOKEN=x", "echo other command", cwd=tmp_path)
    assert other.code == 0 and other.out == "other command\n", other
    missing = conjure("rerun", "999999")
    assert missing.code == 1 and "does not exist" in missing.err


def make_versions(root: Path) -> tuple[Path, list[str]]:
    repo = root / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shas = []
    for v in ("v1", "v2"):
        (repo / "version.txt").write_text(v + "\n")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", v)
        shas.append(
            subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=repo, text=True).strip()
        )
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "version.txt").write_text("v3\n")
    git(repo, "commit", "-q", "-am", "v3")
    git(repo, "checkout", "-q", "main")
    return repo, shas


def test_commit_ref_and_github_url(conjure_stack: Settings, tmp_path: Path) -> None:
    repo, shas = make_versions(tmp_path)
    (repo / "version.txt").write_text("uncommitted\n")  # --commit-ref ignores the working tree
    r = conjure("run", "--commit-ref", "HEAD~1", "cat version.txt", cwd=repo)
    assert r.code == 0 and r.out == "v1\n", r
    assert status(run_id_of(r.err))["spec"]["code"]["commit"] == shas[0]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = f"file://{repo}"
    r = conjure("run", "--github-url", url, "pwd; cat version.txt", cwd=elsewhere)
    assert r.code == 0 and r.out == "/conjure\nv2\n", r  # default branch HEAD, at the repo root
    st = status(run_id_of(r.err))
    assert st["spec"]["code"]["github_url"] == url and st["spec"]["code"]["commit"] == shas[1]
    r = conjure("run", "--github-url", url, "--github-ref", "feature", "cat version.txt",
                cwd=elsewhere)  # fmt: skip
    assert r.code == 0 and r.out == "v3\n", r
    r = conjure("run", "--github-url", url, "--github-ref", shas[0][:7], "cat version.txt",
                cwd=elsewhere)  # fmt: skip
    assert r.code == 0 and r.out == "v1\n", r

    bad = conjure("run", "--github-url", url, "--github-ref", "nope", "true", cwd=elsewhere)
    assert bad.code == 1 and "no such branch, tag or commit" in bad.err and "Casting" not in bad.err
    bad = conjure("run", "--github-url", f"file://{tmp_path}/missing", "true", cwd=elsewhere)
    assert bad.code == 1 and "git clone failed" in bad.err, bad
    bad = conjure("run", "--commit-ref", "nope", "true", cwd=repo)
    assert bad.code == 1 and "no such commit" in bad.err, bad
    bad = conjure("run", "--github-ref", "main", "true", cwd=repo)
    assert bad.code == 2 and "needs --github-url" in bad.err, bad
