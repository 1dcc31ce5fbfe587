"""Store keys never escape the store."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure.infra.store import BadKey, clean_key


@given(st.text())
def test_clean_key_never_escapes(key: str) -> None:
    try:
        k = clean_key(key)
    except BadKey:
        return
    parts = k.split("/")
    assert not k.startswith("/") and ".." not in parts and "" not in parts
