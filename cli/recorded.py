"""A run's status read from its history alone, when no control worker answers a query.

A query needs a worker. With the control worker dead, the server still counts its
pollers as alive for about a minute, and a query to the run waits. The history needs
no worker: its first event holds the run's spec, each state change is a search
attribute upsert with its time, the exit code is in the memo, and a closed run's last
event holds its final status whole. So `conjure status` answers from there (marked
`stale` while the run is open) instead of waiting for a worker that may never come.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.converter import decode_typed_search_attributes

from conjure.workflows import keys
from conjure.workflows.models import RunInput, RunState, RunStatus, StateChange
from conjure.workflows.run_outcome import shown_state, status_of


async def recorded_status(
    client: Client, handle: WorkflowHandle[Any, Any], timeout: timedelta, why: str
) -> RunStatus:
    """The run's status as its history records it. A closed run's is its final status
    (exact); an open run's is rebuilt from spec, state changes and memo, with `stale`
    set to `why` (the workflow may have moved on since)."""
    conv = client.data_converter
    inp: RunInput | None = None
    timeline: list[StateChange] = []
    exit_code: int | None = None
    final: RunStatus | None = None
    closed_as: str | None = None
    async for ev in handle.fetch_history_events(rpc_timeout=timeout):
        if ev.HasField("workflow_execution_started_event_attributes"):
            attrs = ev.workflow_execution_started_event_attributes
            [inp] = await conv.decode(attrs.input.payloads, [RunInput])
            timeline.append(
                StateChange(state=RunState.REQUESTED, at=ev.event_time.ToDatetime(timezone.utc))
            )
        elif ev.HasField("upsert_workflow_search_attributes_event_attributes"):
            sa = ev.upsert_workflow_search_attributes_event_attributes.search_attributes
            state = decode_typed_search_attributes(sa).get(keys.STATE)
            if state:
                change = StateChange(
                    state=RunState(state), at=ev.event_time.ToDatetime(timezone.utc)
                )
                if not (timeline and timeline[-1].state == change.state):
                    timeline.append(change)
        elif ev.HasField("workflow_properties_modified_event_attributes"):
            fields = ev.workflow_properties_modified_event_attributes.upserted_memo.fields
            if keys.EXIT_CODE_MEMO in fields:
                code = conv.payload_converter.from_payload(fields[keys.EXIT_CODE_MEMO])
                exit_code = code if isinstance(code, int) else None
        elif ev.HasField("workflow_execution_completed_event_attributes"):
            result = ev.workflow_execution_completed_event_attributes.result.payloads
            [final] = await conv.decode(result, [RunStatus])
        elif ev.HasField("workflow_execution_failed_event_attributes"):
            failure = ev.workflow_execution_failed_event_attributes.failure
            final = status_of(await conv.decode_failure(failure))
            closed_as = "FAILED"
        elif ev.HasField("workflow_execution_terminated_event_attributes"):
            closed_as = "TERMINATED"
        elif ev.HasField("workflow_execution_timed_out_event_attributes"):
            closed_as = "TIMED_OUT"
        elif ev.HasField("workflow_execution_canceled_event_attributes"):
            closed_as = "CANCELED"
        elif ev.HasField("workflow_execution_continued_as_new_event_attributes"):
            closed_as = "CONTINUED_AS_NEW"
    if final is not None:
        return final
    if inp is None:  # a history without its first event: nothing to rebuild from
        raise LookupError(f"{handle.id} has no start event")
    state = timeline[-1].state if timeline else RunState.REQUESTED
    st = RunStatus(run_id=inp.run_id, state=state, spec=inp.spec, timeline=timeline)
    st.exit_code = exit_code
    if closed_as is not None:
        st.state = RunState(shown_state(state.value, closed_as))
        st.reason = (
            f"its workflow was {closed_as.lower().replace('_', ' ')} while it was {state.value}"
        )
    else:
        st.stale = why
    return st
