"""The `conjure` command's root group, the subcommands of cli/commands/ added to it, and
the one place where errors become a one-line message and an exit code (`_main`). The
entry point (cli/main.py) runs `_main` in its own process, or has the warm CLI's fork
server (cli/warm_server.py) run it in a forked child."""

from __future__ import annotations

import importlib
import os

import click

from conjure.cli.commands.common import Session, info
from conjure.cli.wording import error_message
from conjure.infra.errors import ConjureError

_COMMANDS = "conjure.cli.commands."
# Each subcommand and where it lives: a command's module is imported only when that
# command runs (or `conjure --help` lists it), so `conjure run` loads no console, hyper
# or pipeline code. tests/cli/test_cli_imports.py checks this table against COMMANDS.
LAZY_COMMANDS: dict[str, str] = {
    **dict.fromkeys(["up", "down"], _COMMANDS + "stack"),
    **dict.fromkeys(["run", "rerun"], _COMMANDS + "run"),
    **dict.fromkeys(["ls", "status", "logs", "diff", "metrics"], _COMMANDS + "runs"),
    **dict.fromkeys(["stop", "kill"], _COMMANDS + "control"),
    **dict.fromkeys(["upload", "cp", "rm"], _COMMANDS + "resources"),
    "pipeline": _COMMANDS + "pipeline",
    "hyper": _COMMANDS + "hyper",
    **dict.fromkeys(["machine-types", "machines"], _COMMANDS + "machines"),
    **dict.fromkeys(["frameworks", "images"], _COMMANDS + "environments"),
    "console": _COMMANDS + "console",
    # `conjure worker` and `conjure agent`: the processes' own commands (one parser, theirs).
    **dict.fromkeys(["worker", "agent"], "conjure.worker_agent.commands"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, by name (click's lazy
    loading pattern): each module lists its commands in COMMANDS."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module = importlib.import_module(LAZY_COMMANDS[cmd_name])
        for command in module.COMMANDS:
            self.add_command(command)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conjure")
def cli() -> None:
    """Conjure: run jobs on machines it provisions, as durable Temporal workflows."""


def _main(prog_name: str | None = None) -> int:
    """Run the command; every error ends here as one line and an exit code (2: usage).
    prog_name: what click would detect in the caller's process (the warm CLI's child
    passes its client's)."""
    debug = bool(os.environ.get("CONJURE_DEBUG"))
    try:
        rv = cli.main(standalone_mode=False, prog_name=prog_name)
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
