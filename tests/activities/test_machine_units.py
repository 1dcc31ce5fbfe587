"""Pure pieces of the machine activities."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from conjure.activities.machine import RUN_WRAPPER, exec_word, parse_docker_ts


def test_docker_timestamps() -> None:
    a = parse_docker_ts("2026-11-21T06:59:01.1234Z")
    b = parse_docker_ts("2026-11-21T06:59:01.123456789Z")
    assert b - a == 56789
    assert parse_docker_ts("2026-11-21T06:59:01Z") % 1_000_000_000 == 0


@pytest.mark.parametrize(
    "line, word",
    [
        ("python3 train.py --rate 0.1", "python3"),
        ("python x > log.txt 2>&1", "python"),
        ("python -c 'import a; a.b()'", "python"),
        ("exit 3", "exit"),  # a builtin: the wrapper sees it is no file and does not exec
        ("a; b", ""),
        ("a && b", ""),
        ("a | b", ""),
        ("a &", ""),
        ("(a)", ""),
        ("a\nb", ""),
        ("X=1 python x", ""),
        ("$PY x", ""),
        ("'unbalanced", ""),
        ("", ""),
    ],
)
def test_exec_word(line: str, word: str) -> None:
    assert exec_word(line) == word


def stopped(command: str) -> tuple[int, str, str]:
    """The run wrapper under this host's `sh` (dash, as in the base image), given what
    tini passes on for `conjure stop`: one SIGTERM once the program has printed."""
    p = subprocess.Popen(
        ["sh", "-c", RUN_WRAPPER, "conjure-run", command, exec_word(command)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert p.stdout is not None
    first = p.stdout.readline()
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    return p.returncode, first + out, err


def test_program_ended_by_sigterm_prints_nothing_more() -> None:
    code, out, err = stopped("python3 -u -c 'import time; print(\"up\"); time.sleep(60)'")
    assert (code, out, err) == (143, "up\n", ""), (code, out, err)


def test_trapping_program_in_a_list_keeps_its_exit_code() -> None:
    trainer = (
        "import signal, sys, time; "
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3)); print('up', flush=True); "
        "time.sleep(60)"
    )
    code, out, err = stopped(f'python3 -c "{trainer}" && echo never')
    assert (code, out, err) == (3, "up\n", ""), (code, out, err)
