"""Machine activities under faults (issue 15), with Temporal's ActivityEnvironment and a
real local store: a code archive that cannot be unpacked, one execute attempt at a time."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from pathlib import Path

import docker
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from conjure.activities.machine import MachineActivities
from conjure.infra.config import Settings
from conjure.infra.store import open_store
from conjure.workflows.models import CodeSpec, PrepareInput


def _activities(tmp_path: Path) -> MachineActivities:
    store = open_store(f"file://{tmp_path / 'store'}")
    return MachineActivities(
        Settings(home=tmp_path / "home"),
        "m-test",
        store,
        docker.from_env(),  # the real engine; these steps do not use it
        tmp_path / "machine",
    )


def test_unpackable_code_archive_is_not_retried_and_names_the_code(tmp_path: Path) -> None:
    """A run submitted as a tar archive (before runs were git checkouts) holding a link to
    an absolute path: non-retryable, and the message says it is the code archive."""
    acts = _activities(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("abs-link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    key = "code/deadbeef.tar.gz"
    acts.store.put_bytes(key, buf.getvalue())
    inp = PrepareInput(run_id=1, code=CodeSpec(archive_key=key, repo_name="repo"))
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(acts.prepare_workspace, inp)
    assert err.value.non_retryable
    assert "code archive" in err.value.message and key in err.value.message


def test_a_second_attempt_waits_for_the_first(tmp_path: Path) -> None:
    """While one attempt holds a run's container, another waits (heartbeating) and only
    then goes on: two attempts never work the same container at once."""
    acts = _activities(tmp_path)
    order: list[str] = []
    first_in = threading.Event()

    def first() -> None:
        with acts._run_lock(5):
            first_in.set()
            order.append("first in")
            time.sleep(1.5)
            order.append("first out")

    def second() -> None:
        first_in.wait(10)
        with acts._run_lock(5):
            order.append("second in")

    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *d: beats.append(d)
    t1 = threading.Thread(target=lambda: ActivityEnvironment().run(first))
    t1.start()
    env.run(second)
    t1.join()
    assert order == ["first in", "first out", "second in"]
    assert beats, "the waiting attempt did not heartbeat"
    # Never without details, even on a fresh activity: the run workflow reads a re-attach
    # whose last heartbeat has none as one that never reached a live agent.
    assert all(d for d in beats), beats
