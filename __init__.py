"""Conjure: run computational jobs on machines it provisions, as durable Temporal workflows.

The Python API::

    from conjure import Conjure, RunState

    with Conjure() as c:
        run = c.run("python train.py", machine_type="cpu")
        run.wait(check=True)

The repository's top-level folders are this package's subpackages: ``conjure.workflows``
(the durable contract), ``conjure.activities``, ``conjure.worker_agent``, ``conjure.cli``
(the command and the client API) and ``conjure.infra`` (adapters). Names are imported
lazily so ``import conjure`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Conjure": "conjure.cli.api",
    "AsyncConjure": "conjure.cli.api",
    "Run": "conjure.cli.api",
    "AsyncRun": "conjure.cli.api",
    "RunState": "conjure.workflows.models",
    "RunStatus": "conjure.workflows.models",
}

if TYPE_CHECKING:
    from conjure.cli.api import AsyncConjure as AsyncConjure
    from conjure.cli.api import AsyncRun as AsyncRun
    from conjure.cli.api import Conjure as Conjure
    from conjure.cli.api import Run as Run
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
