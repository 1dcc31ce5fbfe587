"""The `conjure` command's entry point.

It first offers the command to the warm CLI (cli/warm.py: a fork server of the embedded
stack that has already imported everything a command needs); when there is none, or it
refuses, the command runs here as it always did (cli/commands/root.py). This module
imports nothing heavy itself, so asking the warm CLI costs only the interpreter's start.
"""

from __future__ import annotations

import sys
from typing import Any

from conjure.cli import warm


def main() -> None:
    if sys.argv[1:2] == [warm.SERVER_COMMAND]:  # the fork server itself (infra/stack.py)
        from conjure.cli.warm_server import serve

        sys.exit(serve())
    code = warm.run_warm(sys.argv)
    if code is None:  # no warm CLI: in this process, as before
        from conjure.cli.commands.root import _main

        code = _main()
    from conjure.infra.processes import exit_process

    exit_process(code)


def __getattr__(name: str) -> Any:
    """The root group and `_main` (cli/commands/root.py), imported only when asked for."""
    if name in ("cli", "LAZY_COMMANDS", "LazyGroup", "_main"):
        from conjure.cli.commands import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
