"""Reading runs and pipelines from Temporal's visibility store: one code path for
`conjure ls`, the Python API and the web console.

Runs are listed newest first by run id, a page at a time, from search attributes
and memos alone (never a query or a history per run), so a page costs the same
with 10 runs or 10,000. Visibility cannot sort by a search attribute (no ORDER BY
on SQL visibility), so a page is read as a window of run ids: `ConjureRunId` in
[lo, hi), widened until it holds a page of runs that match the filters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from conjure.infra.errors import UsageError
from conjure.workflows import cost as costs
from conjure.workflows import keys
from conjure.workflows.models import FINAL_STATES, RunState
from conjure.workflows.run_outcome import shown_state

MAX_PAGE = 500
# (server, namespace, query) -> the highest id its last newest-first page found: where
# the next such page starts looking, so it costs one visibility call, not two.
_TOP_HINTS: dict[tuple[str, str, str], int] = {}
_Row = TypeVar("_Row")
_FETCH = 1000  # visibility page size when reading a window


@dataclass
class RunSummary:
    run_id: int
    state: str
    machine_type: str
    command: str
    created: datetime | None
    ended: datetime | None
    pipeline_id: int | None = None
    queue_position: int | None = None  # 1 = next; only while waiting in Requested
    queue_unknown: bool = False  # waiting, but no control worker answered for its place
    cost: float | None = None  # USD so far; None before the run had a machine
    exit_code: int | None = None  # the command's, once it ended (runs started since 0.1)

    @property
    def duration(self) -> float | None:
        if self.created is None or self.ended is None:
            return None
        return (self.ended - self.created).total_seconds()

    @property
    def state_text(self) -> str:
        """`Failed (137)`: a final state, and the command's exit code when it was not 0."""
        final = self.state in {s.value for s in FINAL_STATES}
        return f"{self.state} ({self.exit_code})" if self.exit_code and final else self.state


@dataclass
class RunFilter:
    state: str = ""  # a RunState value
    machine_type: str = ""
    text: str = ""  # words of the command (Temporal's full-text match on ConjureCommand)
    pipeline_id: int | None = None

    def query(self) -> str:
        q = "WorkflowType='RunWorkflow'"
        if self.state:
            try:
                state = RunState(self.state)
            except ValueError:
                names = ", ".join(s.value for s in RunState)
                raise UsageError(f"unknown state {self.state!r} (one of {names})") from None
            if state == RunState.TERMINATED:
                # Never set by the workflow: it was closed from outside (terminated, reset,
                # timed out) while its ConjureState still said a state that is not final.
                open_states = ", ".join(
                    f"'{s.value}'" for s in RunState if not s.final and s != state
                )
                q += f" AND ExecutionStatus!='Running' AND {keys.STATE.name} IN ({open_states})"
            else:
                q += f" AND {keys.STATE.name}='{state.value}'"
                if not state.final:  # not one whose workflow was closed from outside
                    q += " AND ExecutionStatus='Running'"
        if self.machine_type:
            q += f" AND {keys.MACHINE_TYPE.name}={_quote(self.machine_type)}"
        if self.text.strip():
            q += f" AND {keys.COMMAND.name}={_quote(self.text.strip())}"
        if self.pipeline_id is not None:
            q += f" AND {keys.PIPELINE_ID.name}={int(self.pipeline_id)}"
        return q


def _quote(value: str) -> str:
    """A string literal of Temporal's list filter; the grammar has no escapes we can
    trust across servers, so a quote or backslash is refused rather than escaped."""
    if any(ch in value for ch in "'\"\\\n\r") or len(value) > 500:
        raise UsageError(f"{value[:40]!r}: quotes, backslashes and newlines are not allowed")
    return f"'{value}'"


@dataclass
class RunsPage:
    runs: list[RunSummary]
    next_before: int | None  # pass as `before` for the next (older) page; None: last page


def summary(wf: WorkflowExecution, memo: dict[str, Any], now: datetime) -> RunSummary | None:
    sa = wf.typed_search_attributes
    run_id = sa.get(keys.RUN_ID)
    if run_id is None:
        return None
    ended = wf.close_time if wf.status != WorkflowExecutionStatus.RUNNING else None
    exit_code = memo.get(keys.EXIT_CODE_MEMO)
    return RunSummary(
        run_id=run_id,
        state=shown_state(
            sa.get(keys.STATE) or "?", wf.status.name if ended and wf.status else None
        ),
        machine_type=sa.get(keys.MACHINE_TYPE) or "?",
        command=sa.get(keys.COMMAND) or "",
        created=wf.start_time,
        ended=ended,
        pipeline_id=sa.get(keys.PIPELINE_ID),
        cost=costs.from_memo(memo, ended or now),
        exit_code=exit_code if isinstance(exit_code, int) else None,
    )


async def _rows(
    client: Client,
    query: str,
    convert: Callable[[WorkflowExecution, dict[str, Any], datetime], _Row | None],
    limit: int | None = None,
) -> list[_Row]:
    out = []
    now = datetime.now(timezone.utc)
    page_size = min(limit or _FETCH, _FETCH)
    async for wf in client.list_workflows(query, page_size=page_size, limit=limit):
        try:
            memo = dict(await wf.memo())
        except Exception:  # a memo this client cannot decode: no cost or exit code shown
            memo = {}
        row = convert(wf, memo, now)
        if row is not None:
            out.append(row)
    return out


async def _id_page(
    client: Client,
    base: str,
    attr: str,
    convert: Callable[[WorkflowExecution, dict[str, Any], datetime], _Row | None],
    ident: Callable[[_Row], int],
    limit: int,
    before: int | None,
) -> tuple[list[_Row], int | None]:
    """The `limit` rows of `base` with the highest ids (search attribute `attr`) below
    `before`, newest first, and the `before` of the next page (None: the last page)."""
    limit = max(1, min(int(limit), MAX_PAGE))
    found: dict[int, _Row] = {}
    hint_key = (client.service_client.config.target_host, client.namespace, base)
    if before is None:
        # Where the newest ids are: the top id an earlier page of this query found, or
        # else visibility's own first page (open workflows, then the most recently
        # closed), which holds (nearly always) the top id. Either is only a guess: the
        # first window has no upper bound, so ids above it are still included.
        hint = _TOP_HINTS.get(hint_key)
        if hint is None:
            probe = await _rows(client, base, convert, limit=limit)
            if not probe:
                return [], None
            hint = max(ident(r) for r in probe)
        hi = hint + 1
        upper = ""
    else:
        hi = int(before)
        upper = f" AND {attr} < {hi}"
    want = limit + 1  # one more than shown: tells whether an older page exists
    # One more than a page, and a little slack for gaps in the ids: a page of dense ids
    # is one visibility call.
    top, window = hi, want + limit // 10
    while True:
        lo = max(top - window, 1)
        for r in await _rows(client, f"{base}{upper} AND {attr} >= {lo}", convert):
            found[ident(r)] = r
        if len(found) >= want or lo <= 1:
            break
        # Widen towards older ids; a sparse filter (few matches per id) widens faster.
        density = len(found) / max(hi - lo, 1)
        guess = int((want - len(found)) / density * 1.5) if density > 0 else window * 8
        window = max(window * 2, min(guess, window * 64))
        upper = f" AND {attr} < {lo}"
        top = lo
    ordered = sorted(found.values(), key=ident, reverse=True)
    if before is None:
        if ordered:
            _TOP_HINTS[hint_key] = ident(ordered[0])
        else:
            _TOP_HINTS.pop(hint_key, None)
        while len(_TOP_HINTS) > 256:
            del _TOP_HINTS[next(iter(_TOP_HINTS))]
    page = ordered[:limit]
    return page, (ident(page[-1]) if len(ordered) > limit else None)


async def runs_page(
    client: Client, flt: RunFilter | None = None, *, limit: int = 50, before: int | None = None
) -> RunsPage:
    """The newest `limit` runs that match, with run ids below `before` when given."""
    rows, next_before = await _id_page(
        client,
        (flt or RunFilter()).query(),
        keys.RUN_ID.name,
        summary,
        lambda r: r.run_id,
        limit,
        before,
    )
    return RunsPage(rows, next_before)


async def count_runs(client: Client, flt: RunFilter | None = None) -> int:
    return (await client.count_workflows((flt or RunFilter()).query())).count


@dataclass
class PipelineSummary:
    pipeline_id: int
    status: str  # Temporal's: Running, Completed, Failed, Terminated, ...
    created: datetime | None
    ended: datetime | None


def pipeline_summary(
    wf: WorkflowExecution, memo: dict[str, Any], now: datetime
) -> PipelineSummary | None:
    pid = wf.typed_search_attributes.get(keys.PIPELINE_ID)
    if pid is None:
        return None
    status = wf.status.name.title().replace("_", " ") if wf.status else "?"
    ended = wf.close_time if wf.status != WorkflowExecutionStatus.RUNNING else None
    return PipelineSummary(pid, status, wf.start_time, ended)


async def pipelines_page(
    client: Client, *, limit: int = 50, before: int | None = None
) -> tuple[list[PipelineSummary], int | None]:
    """Newest pipelines first, a page of `limit` with ids below `before`."""
    return await _id_page(
        client,
        "WorkflowType='PipelineWorkflow'",
        keys.PIPELINE_ID.name,
        pipeline_summary,
        lambda p: p.pipeline_id,
        limit,
        before,
    )
