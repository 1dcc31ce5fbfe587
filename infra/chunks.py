"""A run's logs and metrics are JSON-lines objects in the store (`logs/N/…`,
`metrics/N/…`), written in chunks; these read them back."""

from __future__ import annotations

from conjure.infra.store import Store


def chunk_keys(store: Store, prefix: str, suffix: str = ".jsonl") -> list[str]:
    """The keys below prefix that end in suffix, in order; none when the store cannot
    list them (nothing written yet, or the store is unreachable)."""
    try:
        entries = store.ls(prefix)
    except Exception:
        return []
    return sorted(e.key for e in entries if e.key.endswith(suffix))


def chunk_lines(store: Store, key: str) -> list[str] | None:
    """The lines of one chunk; None when it cannot be read (yet)."""
    try:
        data = store.read_bytes(key)
    except Exception:
        return None
    return data.decode(errors="replace").splitlines()
