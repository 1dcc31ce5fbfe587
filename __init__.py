"""Conjure: run computational jobs on machines it provisions, as durable Temporal workflows.

The Python API::

    from conjure import Conjure, ConjureError, RunState, Step

    with Conjure() as c:
        run = c.run("python train.py", machine_type="cpu")
        run.wait(check=True)

The repository's top-level folders are this package's subpackages: ``conjure.workflows``
(the durable contract), ``conjure.activities``, ``conjure.worker_agent``, ``conjure.cli``
(the command and the client API) and ``conjure.infra`` (adapters). Names are imported
lazily so ``import conjure`` stays cheap. Every error the API raises is a ``ConjureError``
(``UsageError``, ``NotFoundError``, ``ConflictError``, ``UnreachableError``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Conjure": "conjure.cli.sync",
    "Run": "conjure.cli.sync",
    "Pipeline": "conjure.cli.sync",
    "AsyncConjure": "conjure.cli.facade",
    "AsyncRun": "conjure.cli.runs",
    "RunSummary": "conjure.cli.listing",
    "AsyncPipeline": "conjure.cli.pipelines",
    "Step": "conjure.cli.pipelines",
    "RunArgs": "conjure.cli.specs",
    "RunState": "conjure.workflows.models",
    "RunStatus": "conjure.workflows.models",
    "ConjureError": "conjure.infra.errors",
    "UsageError": "conjure.infra.errors",
    "NotFoundError": "conjure.infra.errors",
    "ConflictError": "conjure.infra.errors",
    "UnreachableError": "conjure.infra.errors",
    "ConfigError": "conjure.infra.errors",
    "RunFailedError": "conjure.infra.errors",
    "exit_process": "conjure.infra.processes",
}

if TYPE_CHECKING:
    from conjure.cli.facade import AsyncConjure as AsyncConjure
    from conjure.cli.listing import RunSummary as RunSummary
    from conjure.cli.pipelines import AsyncPipeline as AsyncPipeline
    from conjure.cli.pipelines import Step as Step
    from conjure.cli.runs import AsyncRun as AsyncRun
    from conjure.cli.specs import RunArgs as RunArgs
    from conjure.cli.sync import Conjure as Conjure
    from conjure.cli.sync import Pipeline as Pipeline
    from conjure.cli.sync import Run as Run
    from conjure.infra.errors import ConfigError as ConfigError
    from conjure.infra.errors import ConflictError as ConflictError
    from conjure.infra.errors import ConjureError as ConjureError
    from conjure.infra.errors import NotFoundError as NotFoundError
    from conjure.infra.errors import RunFailedError as RunFailedError
    from conjure.infra.errors import UnreachableError as UnreachableError
    from conjure.infra.errors import UsageError as UsageError
    from conjure.infra.processes import exit_process as exit_process
    from conjure.workflows.models import RunState as RunState
    from conjure.workflows.models import RunStatus as RunStatus

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'conjure' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
