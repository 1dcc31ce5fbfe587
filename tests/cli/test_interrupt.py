"""^C while a command follows something: it detaches at once, even when the code it was
awaiting takes the cancellation for its own (as a client library may: an RPC ending
CANCELLED, caught as a failed call) and carries on."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from conjure.cli.commands.common import until_interrupted


async def _swallows_cancellation(finished: list[str]) -> str:
    swallowed = False
    for _ in range(50):
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True  # the library's "failed call": the loop goes on
    finished.append("yes")
    return "followed to the end"


def test_ctrl_c_is_not_lost_in_code_that_swallows_cancellation() -> None:
    finished: list[str] = []

    async def main() -> str:
        asyncio.get_running_loop().call_later(0.3, os.kill, os.getpid(), signal.SIGINT)
        return await until_interrupted(_swallows_cancellation(finished))

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert finished == []  # it did not follow to the end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_work_that_ends_gives_its_result() -> None:
    async def main() -> str:
        async def work() -> str:
            await asyncio.sleep(0.01)
            return "done"

        return await until_interrupted(work())

    assert asyncio.run(main()) == "done"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
