"""The synchronous Python API: `Conjure`, and the `Run` and `Pipeline` handles it returns.

    from conjure import Conjure

    with Conjure() as c:
        run = c.run("python train.py", machine_type="cpu")
        run.wait(check=True)

Each call runs the AsyncConjure coroutine on the instance's own event loop, on a thread:
this works in plain scripts and where a loop is already running (Jupyter, async code).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from conjure.cli.facade import AsyncConjure
from conjure.cli.listing import RunSummary
from conjure.cli.pipelines import AsyncPipeline, Step
from conjure.cli.runs import AsyncRun
from conjure.infra.config import Settings
from conjure.infra.logs import LogLine
from conjure.infra.metrics import Point
from conjure.infra.store import Entry
from conjure.workflows.models import PoolView, RunState, RunStatus, TerminateMachineResult
from conjure.workflows.pipeline_models import PipelineStatus

T = TypeVar("T")


class Conjure:
    """Synchronous API: `Conjure().run("python train.py").wait()`. `aio` is the
    AsyncConjure underneath (settings, store, catalog, ...)."""

    def __init__(self, settings: Settings | None = None, *, autostart: bool = True) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.aio = AsyncConjure(settings, autostart=autostart)

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def run(self, command: str, **kwargs: Any) -> Run:
        """See AsyncConjure.run."""
        return Run(self, self._sync(self.aio.run(command, **kwargs)))

    def get(self, run_id: int) -> Run:
        return Run(self, self._sync(self.aio.get(run_id)))

    def rerun(self, run_id: int, command: str | None = None, **kwargs: Any) -> Run:
        return Run(self, self._sync(self.aio.rerun(run_id, command, **kwargs)))

    def pipeline(self, steps: Sequence[Step], *, name: str = "", **kwargs: Any) -> Pipeline:
        """Start a pipeline of `Step`s (conjure.Step); returns a Pipeline handle."""
        return Pipeline(self, self._sync(self.aio.pipeline(steps, name=name, **kwargs)))

    def get_pipeline(self, pipeline_id: int) -> Pipeline:
        return Pipeline(self, self._sync(self.aio.get_pipeline(pipeline_id)))

    def hyper(self, kind: str, command: str, params: Any, **kwargs: Any) -> Any:
        """Start a hyperparameter search (cli/hyper.py): kind grid, random or bayes;
        returns a Hyper handle (status, wait, stop)."""
        from conjure.cli.hyper import Hyper, start_hyper

        return Hyper(self, self._sync(start_hyper(self.aio, kind, command, params, **kwargs)))

    def hyper_grid(self, command: str, params: Any, **kwargs: Any) -> Any:
        return self.hyper("grid", command, params, **kwargs)

    def hyper_random(self, command: str, params: Any, num_runs: int, **kwargs: Any) -> Any:
        return self.hyper("random", command, params, num_runs=num_runs, **kwargs)

    def hyper_bayes(self, command: str, params: Any, num_runs: int, **kwargs: Any) -> Any:
        return self.hyper("bayes", command, params, num_runs=num_runs, **kwargs)

    def get_hyper(self, hyper_id: int) -> Any:
        from conjure.cli.hyper import Hyper, get_hyper

        return Hyper(self, self._sync(get_hyper(self.aio, hyper_id)))

    def list_hypers(self, limit: int = 50) -> list[Any]:
        """The newest hyperparameter searches first (HyperStatus each)."""
        from conjure.cli.hyper import list_hypers

        return self._sync(list_hypers(self.aio, limit))

    def list_runs(self, limit: int = 50) -> list[RunSummary]:
        return self._sync(self.aio.list_runs(limit))

    def pool(self) -> PoolView:
        return self._sync(self.aio.pool())

    def terminate_machine(self, machine_id: str, force: bool = False) -> TerminateMachineResult:
        return self._sync(self.aio.terminate_machine(machine_id, force))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> Conjure:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Run:
    """Synchronous handle on one run (see AsyncRun)."""

    def __init__(self, conjure: Conjure, inner: AsyncRun) -> None:
        self._c = conjure
        self._inner = inner
        self.id = inner.id

    def status(self) -> RunStatus:
        return self._c._sync(self._inner.status())

    def wait(self, *, check: bool = False, state: RunState | str | None = None) -> RunStatus:
        """The final status (with state: until that state); with check, RunFailedError
        unless the run completed."""
        return self._c._sync(self._inner.wait(check=check, state=state))

    def wait_status(self, *states: RunState | str) -> RunStatus:
        return self._c._sync(self._inner.wait_status(*states))

    def wait_final(self) -> RunStatus:
        """The status once the state is final, before the machine's clean-up."""
        return self._c._sync(self._inner.wait_final())

    def diff(self) -> bytes | None:
        return self._c._sync(self._inner.diff())

    def stop(self, grace_seconds: float | None = None) -> RunStatus:
        return self._c._sync(self._inner.stop(grace_seconds))

    def kill(self) -> RunStatus:
        return self._c._sync(self._inner.kill())

    def metric_series(self) -> dict[str, list[Point]]:
        return self._inner.metric_series()

    def outputs(self) -> list[Entry]:
        return self._inner.outputs()

    def metrics(self) -> list[dict[str, Any]]:
        return self._inner.metrics()

    def logs(self, follow: bool = False, *, program_only: bool = False) -> Iterator[LogLine]:
        agen = self._inner.logs(follow=follow, program_only=program_only)

        async def next_line() -> LogLine:
            return await agen.__anext__()

        while True:
            try:
                yield self._c._sync(next_line())
            except StopAsyncIteration:
                return


class Pipeline:
    """Synchronous handle on a pipeline (see AsyncPipeline)."""

    def __init__(self, conjure: Conjure, inner: AsyncPipeline) -> None:
        self._c = conjure
        self._inner = inner
        self.id = inner.id

    def status(self) -> PipelineStatus:
        return self._c._sync(self._inner.status())

    def wait(self) -> PipelineStatus:
        return self._c._sync(self._inner.wait())

    def stop(self) -> PipelineStatus:
        return self._c._sync(self._inner.stop())

    def run(self, step: str) -> Run:
        """The run of step."""
        return Run(self._c, self._inner.run(step, self.status()))
