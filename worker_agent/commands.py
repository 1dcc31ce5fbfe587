"""The one entry point of Conjure's long-running processes, and its one parser.

`conjure worker` and `conjure agent` are these commands (cli/main.py adds them to the
`conjure` group); `python -m conjure.worker_agent worker|agent ...` runs them without
loading the rest of the CLI, which is how the embedded stack and local machines start
them (infra/stack.py, infra/providers/local.py); a cloud machine's startup script runs
`conjure agent` (infra/templates/startup.sh).
"""

from __future__ import annotations

import asyncio
import logging

import click


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


@click.command()
def worker() -> None:
    """Run a control worker in the foreground (workflows and provider activities)."""
    from conjure.infra.config import get_settings
    from conjure.worker_agent.control import run_control_worker

    _logging()
    asyncio.run(run_control_worker(get_settings()))


@click.command()
@click.option("--machine-id", required=True, help="This machine's id in the pool.")
def agent(machine_id: str) -> None:
    """Run a machine's worker agent in the foreground."""
    from conjure.infra.config import get_settings
    from conjure.worker_agent.agent import run_agent

    _logging()
    asyncio.run(run_agent(get_settings(), machine_id))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Conjure's processes: the control worker and the per-machine agent."""


COMMANDS = [worker, agent]
for _command in COMMANDS:
    main.add_command(_command)
