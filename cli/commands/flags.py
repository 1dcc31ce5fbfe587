"""The run flags, defined once: `conjure run` takes them all, `conjure rerun` a subset.

Each flag is a field of the API's RunArgs (cli/specs.py) — the same fields a pipeline
step takes in YAML — plus `--background`, which is the command's own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

F = Callable[..., Any]

# field -> the click option, in the order `--help` lists them.
FLAGS: dict[str, Callable[[str | None], Callable[[F], F]]] = {
    "machine_type": lambda h: click.option(
        "-t", "--machine-type", help=h or "Machine type (see `conjure machine-types`)."
    ),
    "mounts": lambda h: click.option(
        "-m", "--mount", "mounts", multiple=True, metavar="SRC[:DEST]",
        help=h or "Mount a resource.",
    ),
    "env": lambda h: click.option(
        "-e", "--env", "env", multiple=True, metavar="NAME=VALUE", help=h or "Set a variable."
    ),
    "background": lambda h: click.option(
        "-b", "--background", is_flag=True, help=h or "Print the run id and return at once."
    ),
    "github_url": lambda h: click.option(
        "--github-url", metavar="URL", help=h or "Take the code from this git repository."
    ),
    "github_ref": lambda h: click.option(
        "--github-ref", metavar="REF", help=h or "Branch, tag or commit of --github-url."
    ),
    "commit_ref": lambda h: click.option(
        "--commit-ref", metavar="REF", help=h or "Take the code from this local commit."
    ),
    "force": lambda h: click.option(
        "-f", "--force", is_flag=True,
        help=h or "Ask nothing about uncommitted or untracked files (Spell's `run -f`).",
    ),
    "apt": lambda h: click.option(
        "--apt", "apt", multiple=True, metavar="PKG",
        help=h or "apt package to install (repeatable).",
    ),
    "pip": lambda h: click.option(
        "--pip", "pip", multiple=True, metavar="REQ",
        help=h or 'pip requirement, e.g. "Pillow>=8.3.2" (repeatable; wins over --pip-req).',
    ),
    "pip_req": lambda h: click.option(
        "--pip-req", "pip_req", type=click.Path(path_type=Path), metavar="FILE",
        callback=_not_empty, help=h or "pip requirements file, installed before --pip.",
    ),
    "conda_file": lambda h: click.option(
        "--conda-file", "conda_file", type=click.Path(path_type=Path), metavar="FILE",
        callback=_not_empty, help=h or "conda environment file (built with micromamba; not with --pip-req).",
    ),
    "docker_image": lambda h: click.option(
        "--docker-image", "docker_image", metavar="IMAGE",
        help=h or "base the environment on this image instead of Conjure's.",
    ),
    "framework": lambda h: click.option(
        "--framework", "framework", metavar="NAME",
        help=h or "framework image to start from (see `conjure frameworks`).",
    ),
    "deps_from_env": lambda h: click.option(
        "--deps-from-env", "deps_from_env", is_flag=True,
        help=h or "take the packages of the active virtual or conda environment.",
    ),
    "stop_conditions": lambda h: click.option(
        "--stop-condition", "stop_conditions", multiple=True, metavar='"NAME OP VALUE[ : K]"',
        help=h or "Stop the run when metric NAME satisfies OP (< > <= >=) VALUE, checked "
        "from its K-th value on (every value without K). Repeatable.",
    ),
    "auto_resume": lambda h: click.option(
        "--auto-resume", "auto_resume", type=click.IntRange(min=1), is_flag=False,
        flag_value=3, default=None, metavar="[N]",
        help=h or "If the machine is reclaimed or lost, go on from the files saved so far on "
        "a new machine, up to N attempts in all (3 when N is not given; write "
        "--auto-resume=N right before the command).",
    ),
    "spot_fallback": lambda h: click.option(
        "--spot-fallback", "spot_fallback", type=click.IntRange(min=1), metavar="K",
        help=h or "With --auto-resume on a spot machine type: after K interruptions, on demand.",
    ),
}  # fmt: skip

COMMAND_ONLY = ("background", "force")


def _not_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """click.Path turns '' into '.': an empty file name is refused before that."""
    if value is not None and str(value) in ("", "."):
        raise click.BadParameter("the value is empty (a file name is needed)")
    return value


def run_flags(*names: str, help: dict[str, str] | None = None) -> Callable[[F], F]:
    """Add the named flags (all without names) to a command, in FLAGS' order; help
    overrides a flag's help text for this command."""
    chosen = [n for n in FLAGS if not names or n in names]

    def decorate(fn: F) -> F:
        for name in reversed(chosen):
            fn = FLAGS[name]((help or {}).get(name))(fn)
        return fn

    return decorate


def parse_env(values: tuple[str, ...]) -> dict[str, str]:
    """`--env NAME=VALUE` values; a malformed one is a usage error."""
    env = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    return env


def run_kwargs(flags: dict[str, Any]) -> dict[str, Any]:
    """The API's keywords (RunArgs fields) of a command's parsed run flags; the
    command's own flags are left out, and flags not given are not passed."""
    given = {k: v for k, v in flags.items() if k in FLAGS and k not in COMMAND_ONLY}
    if "env" in given:
        given["env"] = parse_env(given["env"])
    for count in ("auto_resume", "spot_fallback"):  # not given: 0
        if count in given:
            given[count] = given[count] or 0
    return given
