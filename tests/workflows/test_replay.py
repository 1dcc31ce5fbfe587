"""Replaying committed histories of real runs proves the workflows deterministic:
a change that would break a running workflow fails here (use workflow.patched)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType as E
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from conjure.worker_agent.control import WORKFLOWS

HISTORIES = sorted(Path(__file__).with_name("histories").glob("*.json"))


def test_histories_are_committed() -> None:
    names = {p.stem for p in HISTORIES}
    assert {
        "run_complete", "run_failed_with_mount", "counter", "pool", "pipeline", "pool_reconciler",
        "hyper_grid", "run_auto_resumed", "run_killed_final_before_cleanup",
        "run_stopped_final_before_cleanup",
    } <= names  # fmt: skip


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


def history_names(events: Sequence[HistoryEvent]) -> list[str]:
    """A run's history as names, in order: `state:Killed` (a ConjureState upsert),
    `scheduled:<activity>`, `completed:<activity>`, `update:<name>` (an update answered)."""
    names: list[str] = []
    activities: dict[int, str] = {}
    updates: dict[str, str] = {}
    for e in events:
        if e.event_type == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = e.upsert_workflow_search_attributes_event_attributes.search_attributes
            if "ConjureState" in fields.indexed_fields:
                names.append("state:" + json.loads(fields.indexed_fields["ConjureState"].data))
        elif e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activities[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
            names.append("scheduled:" + activities[e.event_id])
        elif e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled = e.activity_task_completed_event_attributes.scheduled_event_id
            names.append("completed:" + activities[scheduled])
        elif e.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            req = e.workflow_execution_update_accepted_event_attributes.accepted_request
            updates[req.meta.update_id] = req.input.name
        elif e.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            meta = e.workflow_execution_update_completed_event_attributes.meta
            names.append("update:" + updates[meta.update_id])
    return names


def assert_final_before_cleanup(names: list[str], final: str) -> None:
    """The state was final, and a waiting `final_status` update answered, before the
    clean-up had run; the clean-up still ran, once."""
    assert names.count("scheduled:cleanup_workspace") == 1, names
    assert names.count("completed:cleanup_workspace") == 1, names
    assert names.count(f"state:{final}") == 1, names
    assert names.index(f"state:{final}") < names.index("scheduled:cleanup_workspace"), names
    assert names.index("update:final_status") < names.index("completed:cleanup_workspace"), names


@pytest.mark.parametrize("final", ["Killed", "Stopped"])
def test_stopped_and_killed_runs_are_final_before_their_cleanup(final: str) -> None:
    """Recorded runs (record_histories.py `final`): Killed once the program's container
    ended (execute completed), Stopped once its files were saved (once); either before
    the workspace's clean-up was scheduled, and the waiting update answered before the
    clean-up completed."""
    path = Path(__file__).with_name("histories") / f"run_{final.lower()}_final_before_cleanup.json"
    names = history_names(WorkflowHistory.from_json("run", path.read_text()).events)
    assert_final_before_cleanup(names, final)
    assert names.index("completed:execute") < names.index(f"state:{final}"), names
    if final == "Stopped":
        assert names.count("completed:save_outputs") == 1, names
        assert names.index("completed:save_outputs") < names.index("state:Stopped"), names
    else:
        assert "scheduled:save_outputs" not in names, names
