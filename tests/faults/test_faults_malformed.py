"""Malformed invocations, as a new user types them: each ends in one line on stderr,
the exit code the table says (2 for usage), no traceback, and no run created.

Every invocation goes through the real `conjure` entry point against a real stack,
so "no run created" is checked where a run would be: the run counter and Temporal's
visibility, after the whole table ran.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from conjure.cli.main import _main
from tests.conftest import conjure, running_stack, stack_env

pytestmark = pytest.mark.faults

USAGE = 2
FAIL = 1

# (arguments, expected exit code, a word the one line must contain)
TABLE: list[tuple[list[str], int, str]] = [
    # the command itself
    (["run"], USAGE, "COMMAND"),
    (["run", ""], USAGE, "empty"),
    (["run", "   "], USAGE, "empty"),
    (["run", "-t"], USAGE, "requires an argument"),
    (["nosuchcommand"], USAGE, "No such command"),
    (["--nosuchflag"], USAGE, "No such option"),
    (["run", "--nosuchflag", "echo"], USAGE, "No such option"),
    # machine types
    (["run", "-t", "", "echo"], USAGE, "empty"),
    (["run", "-t", " ", "echo"], USAGE, "empty"),
    (["run", "--machine-type", "nosuch", "echo"], USAGE, "unknown machine type"),
    (["run", "--machine-type", "cpu\n", "echo"], USAGE, "control character"),
    (["run", "--machine-type", "CPU", "echo"], USAGE, "unknown machine type"),
    # environment flags
    (["run", "--docker-image", "", "echo"], USAGE, "empty"),
    (["run", "--docker-image", " ", "echo"], USAGE, "empty"),
    (["run", "--docker-image", "a b", "echo"], USAGE, "docker-image"),
    (["run", "--docker-image", "Bad/Upper:tag", "echo"], USAGE, "docker-image"),
    (["run", "--docker-image", "img\n", "echo"], USAGE, "control character"),
    (["run", "--framework", "", "echo"], USAGE, "empty"),
    (["run", "--framework", "nosuch", "echo"], USAGE, "unknown framework"),
    (["run", "--apt", "", "echo"], USAGE, "empty"),
    (["run", "--apt", "bad;rm -rf /", "echo"], USAGE, "apt"),
    (["run", "--apt", "-oops", "echo"], USAGE, "apt"),
    (["run", "--pip", "", "echo"], USAGE, "empty"),
    (["run", "--pip", "not a requirement !!", "echo"], USAGE, "pip"),
    (["run", "--pip", "numpy\n", "echo"], USAGE, "control character"),
    (["run", "--pip-req", "", "echo"], USAGE, "empty"),
    (["run", "--pip-req", "/nonexistent/req.txt", "echo"], USAGE, "req.txt"),
    (["run", "--conda-file", "/nonexistent/env.yml", "echo"], USAGE, "env.yml"),
    (["run", "--conda-file", "", "echo"], USAGE, "empty"),
    (["run", "--pip-req", "REQ", "--conda-file", "ENV", "echo"], USAGE, "mutually exclusive"),
    # code
    (["run", "--github-url", "", "echo"], USAGE, "empty"),
    (["run", "--github-url", " ", "echo"], USAGE, "empty"),
    (["run", "--github-url", "file:///nonexistent", "echo"], FAIL, "does not appear"),
    (["run", "--github-ref", "main", "echo"], USAGE, "needs --github-url"),
    (["run", "--github-url", "x", "--commit-ref", "y", "echo"], USAGE, "cannot be combined"),
    (["run", "--github-url", "file:///x", "--github-ref", "", "echo"], USAGE, "empty"),
    (["run", "--commit-ref", "", "echo"], USAGE, "empty"),
    (["run", "--commit-ref", "HEAD", "echo"], FAIL, "not in a git repository"),
    (["run", "--github-url", "url\nwith newline", "echo"], USAGE, "control character"),
    # environment variables
    (["run", "-e", "NOEQUALS", "echo"], USAGE, "NAME=VALUE"),
    (["run", "-e", "=value", "echo"], USAGE, "NAME=VALUE"),
    (["run", "-e", "1A=v", "echo"], USAGE, "not a valid variable name"),
    (["run", "-e", "A-B=v", "echo"], USAGE, "not a valid variable name"),
    (["run", "-e", "A B=v", "echo"], USAGE, "not a valid variable name"),
    (["run", "-e", "", "echo"], USAGE, "NAME=VALUE"),
    (["run", "-e", "SECRET-X=v", "echo"], USAGE, "not a valid variable name"),
    # mounts
    (["run", "-m", "", "echo"], USAGE, "empty"),
    (["run", "-m", " ", "echo"], USAGE, "empty"),
    (["run", "-m", ":", "echo"], USAGE, "mount"),
    (["run", "-m", "runs", "echo"], USAGE, "mount"),
    (["run", "-m", "runs/x", "echo"], USAGE, "runs/<run id>"),
    (["run", "-m", "runs/1:", "echo"], USAGE, "nothing after"),
    (["run", "-m", "runs/1:/a:b", "echo"], USAGE, "too many"),
    (["run", "-m", "foo/bar", "echo"], USAGE, "must start with"),
    (["run", "-m", "ftp://host/x", "echo"], USAGE, "unknown scheme"),
    (["run", "-m", "s3://", "echo"], USAGE, "mount"),
    (["run", "-m", "runs/1/../2", "echo"], USAGE, "mount"),
    (["run", "-m", "runs/1:../x", "echo"], USAGE, ".."),
    (["run", "-m", "runs/1:/a/../../b", "echo"], USAGE, ".."),
    (["run", "-m", "runs/1/hi.txt:/proc/x", "echo"], USAGE, "/proc"),
    (["run", "-m", "runs/1:/proc", "echo"], USAGE, "/proc"),
    (["run", "-m", "runs/1:/sys/kernel/x", "echo"], USAGE, "/sys"),
    (["run", "-m", "runs/1:/dev/shm/x", "echo"], USAGE, "/dev"),
    (["run", "-m", "runs/1:/conjure", "echo"], USAGE, "workspace root"),
    (["run", "-m", "runs/1:/conjure/", "echo"], USAGE, "workspace root"),
    (["run", "-m", "runs/1:/", "echo"], USAGE, "cannot mount onto /"),
    (["run", "-m", "runs/1:/run/conjure/x", "echo"], USAGE, "/run/conjure"),
    (["run", "-m", "runs/1/hi.txt\n:/mnt/x", "echo"], USAGE, "control character"),
    (["run", "-m", "runs/1:/mnt/a\nb", "echo"], USAGE, "control character"),
    (["run", "-m", "uploads/nope", "echo"], USAGE, "does not exist"),
    (["run", "-m", "runs/999999", "echo"], USAGE, "does not exist"),
    (["run", "-m", "public/none/here", "echo"], USAGE, "does not exist"),
    # stop conditions
    (["run", "--stop-condition", "", "echo"], USAGE, "stop-condition"),
    (["run", "--stop-condition", "loss", "echo"], USAGE, "stop-condition"),
    (["run", "--stop-condition", "loss < x", "echo"], USAGE, "stop-condition"),
    (["run", "--stop-condition", "loss ?? 1", "echo"], USAGE, "stop-condition"),
    (["run", "--stop-condition", "loss < 1 : x", "echo"], USAGE, "stop-condition"),
    (["run", "--stop-condition", "< 1", "echo"], USAGE, "stop-condition"),
    # other commands
    (["status", "x"], USAGE, "not a valid integer"),
    (["status", ""], USAGE, "not a valid integer"),
    (["status"], USAGE, "RUN_ID"),
    (["status", "99999"], FAIL, "does not exist"),
    (["logs", "abc"], USAGE, "not a valid integer"),
    (["logs", "99999"], FAIL, "does not exist"),
    (["kill"], USAGE, "RUN_ID"),
    (["kill", "99999"], FAIL, "does not exist"),
    (["stop", "abc"], USAGE, "not a valid integer"),
    (["rerun", "x"], USAGE, "not a valid integer"),
    (["rerun", "99999"], FAIL, "does not exist"),
    (["rerun", "--machine-type", "", "1"], USAGE, "empty"),
    (["ls", "-n", "x"], USAGE, "not a valid integer"),
    (["ls", "--state", "Bogus"], USAGE, "unknown state"),
    (["ls", "--state", ""], USAGE, "empty"),
    (["cp"], USAGE, "RESOURCE"),
    (["cp", "secrets/x", "out"], FAIL, "secrets"),
    (["upload", "/nonexistent/file"], USAGE, "nonexistent"),
    (["machines", "terminate"], USAGE, "MACHINE_ID"),
    (["metrics", "x"], USAGE, "not a valid integer"),
]


def test_table_is_big_enough() -> None:
    assert len(TABLE) >= 80


@pytest.fixture(scope="module")
def malformed_stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("malformed-home")
    with running_stack(stack_env(home)) as settings:
        yield settings


def invoke(args: list[str]) -> tuple[int, str, str]:
    """The entry point's own function (`conjure.cli.main._main`) in this process, with
    this argv: exit code, stdout, stderr. An exception escaping it is a traceback."""
    runner = CliRunner()
    saved = sys.argv
    with runner.isolation() as (out, err, _):
        sys.argv = ["conjure", *args]
        try:
            code = _main()
        except BaseException as e:  # what a user would see as a traceback
            code = -1
            sys.stderr.write("Traceback (escaped _main): " + "".join(traceback.format_exception(e)))
        finally:
            sys.argv = saved
        sys.stdout.flush()
        sys.stderr.flush()
        return code, out.getvalue().decode(), err.getvalue().decode()


def check(args: list[str], code: int, word: str, got: int, out: str, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    why = []
    if got != code:
        why.append(f"exit {got}, expected {code}")
    if len(lines) != 1:
        why.append(f"{len(lines)} lines on stderr")
    if "Traceback" in err or "Traceback" in out:
        why.append("a traceback")
    if out.strip():
        why.append(f"stdout {out.strip()[:80]!r}")
    if word.lower() not in err.lower():
        why.append(f"no {word!r} in the message")
    return f"{args!r}: {', '.join(why)}: {err.strip()[:300]!r}" if why else ""


def test_malformed_invocations(
    malformed_stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    cwd = tmp_path / "not-a-repo"
    cwd.mkdir()
    (cwd / "REQ").write_text("requests\n")
    (cwd / "ENV").write_text("name: x\ndependencies: [python]\n")
    monkeypatch.chdir(cwd)

    problems = [check(args, code, word, *invoke(args)) for args, code, word in TABLE]
    # A sample through the installed `conjure` executable too (its own process).
    for args, code, word in TABLE[::12]:
        r = conjure(*args, cwd=cwd, timeout=120)
        problems.append(check(args, code, word, r.code, r.out, r.err))
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)

    # No run was created: the run counter never handed out an id, visibility holds none.
    listed = conjure("ls", "--json", cwd=cwd)
    assert listed.code == 0, listed
    assert json.loads(listed.out) == []
    runs_store = malformed_stack.home / "store" / "runs"
    assert not runs_store.exists() or not any(runs_store.iterdir())
    assert not any((malformed_stack.home / "store" / "secrets").glob("*"))
