"""`python -m conjure.worker_agent worker|agent --machine-id ID`: the same commands as
`conjure worker` and `conjure agent`, without loading the rest of the CLI."""

from conjure.worker_agent.commands import main

main()
