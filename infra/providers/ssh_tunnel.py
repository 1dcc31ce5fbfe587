"""The tunnel of one ssh machine: `python -m conjure.infra.providers.ssh_tunnel KEY MACHINE`.

Started (in its own session) by the ssh provider's `provision`, stopped by `terminate`.
It holds the SSH connection to the host, reverse-forwards this side's loopback Temporal
server and object-store endpoint to the host's loopback (the remote listeners bind
127.0.0.1 only), and makes sure the machine's agent runs there. A lost connection
(keepalive) is retried every few seconds; the agent keeps running on the host
meanwhile, and its Temporal client reconnects once the forwards are back.

It writes its state to $CONJURE_HOME/ssh/tunnels/KEY.json: connecting, connected,
disconnected (with the error), failed (an error retrying cannot fix).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time

from conjure.infra.config import Settings, get_settings
from conjure.infra.providers import ssh


def _status(settings: Settings, key: str, state: str, error: str = "") -> None:
    path = ssh.tunnel_status_path(settings, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"pid": os.getpid(), "state": state, "error": error, "since": time.time()})
    )
    os.replace(tmp, path)


async def serve(key: str, machine_id: str) -> None:
    settings = get_settings()
    host = next((h for h in settings.ssh_hosts if h.key == key), None)
    if host is None:
        _status(settings, key, "failed", f"no ssh host {key} in the configuration")
        return
    home = ""
    first = True
    while True:
        if not first and ssh.read_state(settings, host).machine_id != machine_id:
            return  # the machine was terminated (or its state removed): nothing to hold
        _status(settings, key, "connecting")
        try:
            conn = await ssh.connect(settings, host)
            async with conn:
                for rport, lhost, lport in ssh.forwards(settings):
                    await conn.forward_remote_port("127.0.0.1", rport, lhost, lport)
                if not home:
                    home = (await ssh.run(conn, f"cd {ssh.remote_dir(host)} && pwd")).strip()
                env = ssh.agent_env(settings, home)
                out = await ssh.run(conn, ssh.start_agent_script(host, machine_id, env))
                logging.info("%s: forwards up, agent %s", host.label, out.strip())
                _status(settings, key, "connected")
                first = False
                await conn.wait_closed()
                raise ssh.SSHFailure("connection closed")
        except Exception as e:
            line = ssh.describe_error(e)
            logging.warning("%s: %s", host.label, line)
            if first and "refused" in line and "key" in line:
                _status(settings, key, "failed", line)
                return
            _status(settings, key, "disconnected", line)
        await asyncio.sleep(2)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    key, machine_id = sys.argv[1], sys.argv[2]

    async def run() -> None:
        task = asyncio.ensure_future(serve(key, machine_id))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(run())


if __name__ == "__main__":
    main()
