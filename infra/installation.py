"""The installation id: which Conjure installation an image (or anything else left on a
shared engine) belongs to.

An installation is one store: the client, the control worker and every machine's agent
share it, so the id is kept there (`installation-id`), made once by whoever asks first.
Two installations on one Docker engine (two users, two test stacks) have two stores and
so two ids, and `conjure images` / `conjure images prune` touch only their own images.
"""

from __future__ import annotations

import uuid

from conjure.infra.store import Store, StoreError

KEY = "installation-id"
LABEL = "org.conjure.installation"
_cache: dict[str, str] = {}


def installation_id(store: Store) -> str:
    cached = _cache.get(store.url)
    if cached:
        return cached
    try:
        found = store.read_bytes(KEY).decode().strip()
    except StoreError:
        found = ""
    if not found:
        store.put_bytes(KEY, uuid.uuid4().hex[:16].encode())
        # Two first callers at once: both read back whichever write landed last.
        found = store.read_bytes(KEY).decode().strip()
    _cache[store.url] = found
    return found
