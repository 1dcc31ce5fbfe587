"""How a run's workflow closes, so the Temporal Web UI's list tells the truth.

A run that ends Complete completes its workflow (a green COMPLETED badge); a run that
ends any other way (Failed, Stopped, Killed, Interrupted) fails it with an
ApplicationError of type `RunEnded` (a red FAILED badge) whose message names the
state and reason (`Run 12 Stopped: stopped by conjure stop`) and whose first detail
is the run's whole final RunStatus. Whoever awaits a run's result (`AsyncRun.wait`, a
pipeline's child, a retry) gets that status back with `status_of(error)`.

A run's workflow terminated or timed out from outside (the Web UI's Terminate or
Reset) cannot say so itself: `conjure` shows such a run as Terminated, and the
control worker's reaper (activities/run_reaper.py) gives its machine back.
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError

from conjure.workflows.models import RunState, RunStatus

FAIL_PATCH = "run-fails-unless-complete"
FAILURE_TYPE = "RunEnded"


def failure(status: RunStatus) -> ApplicationError:
    reason = f": {status.reason}" if status.reason else ""
    return ApplicationError(
        f"Run {status.run_id} {status.state.value}{reason}",
        status.model_dump(mode="json"),
        type=FAILURE_TYPE,
        non_retryable=True,
    )


def status_of(error: BaseException | None) -> RunStatus | None:
    """The final RunStatus a failed run workflow carries, found along the error's
    causes (WorkflowFailureError, ChildWorkflowError); None for any other failure."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, ApplicationError) and error.type == FAILURE_TYPE:
            details: Any = error.details
            if details and isinstance(details[0], dict):
                return RunStatus.model_validate(details[0])
            return None
        error = getattr(error, "cause", None) or error.__cause__
        seen += 1
    return None


def shown_state(state: str, closed_as: str | None) -> str:
    """The state to show for a run whose workflow closed as `closed_as` (Temporal's
    execution status name, None while it runs): a run whose workflow was terminated
    or timed out before it reached a final state is Terminated."""
    if closed_as is None or closed_as.upper() == "RUNNING":
        return state
    try:
        if RunState(state).final:
            return state
    except ValueError:
        pass
    return RunState.TERMINATED.value
