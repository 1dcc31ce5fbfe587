"""The `conjure` command: one root group, the subcommands of cli/commands/ added to it,
and the one place where errors become a one-line message and an exit code."""

from __future__ import annotations

import os

import click

from conjure.cli.commands import (
    console,
    control,
    environments,
    hyper,
    machines,
    pipeline,
    resources,
    run,
    runs,
    stack,
)
from conjure.cli.commands.common import Session, info
from conjure.cli.wording import error_message
from conjure.infra.errors import ConjureError
from conjure.infra.processes import exit_process
from conjure.worker_agent.commands import agent, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conjure")
def cli() -> None:
    """Conjure: run jobs on machines it provisions, as durable Temporal workflows."""


for _module in (
    stack, run, runs, control, resources, pipeline, hyper, machines, environments, console,
):  # fmt: skip
    for _command in _module.COMMANDS:
        cli.add_command(_command)
# `conjure worker` and `conjure agent`: the processes' own commands (one parser, theirs).
cli.add_command(worker)
cli.add_command(agent)


def main() -> None:
    exit_process(_main())


def _main() -> int:
    """Run the command; every error ends here as one line and an exit code (2: usage)."""
    debug = bool(os.environ.get("CONJURE_DEBUG"))
    try:
        rv = cli.main(standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        info(f"error: {e.format_message()}{hint}")
        return e.exit_code
    except click.ClickException as e:
        info(f"error: {e.format_message()}")
        return e.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        _detached_hint()
        return 130
    except ConjureError as e:
        info(f"error: {error_message(e)}")
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:
        if debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        info(f"error: {type(e).__name__}: {msg} (set CONJURE_DEBUG=1 for details)")
        return 1


def _detached_hint() -> None:
    run_id = Session.current_run
    if run_id is not None:
        info(f"✨ Detached: run {run_id} goes on. Follow it again with `conjure logs -f {run_id}`")


if __name__ == "__main__":
    main()
