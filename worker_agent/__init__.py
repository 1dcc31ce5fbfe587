"""The worker agent: one per machine, polling only that machine's task queue."""
