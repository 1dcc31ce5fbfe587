"""Machine providers behind one interface (`base.Provider`): provision, terminate, list,
describe, as plain functions of one module per provider, in and out cloud-neutral
`Instance` records. Every instance is tagged with its Conjure machine id, and
`provision` first looks for an instance with that tag, so a retried call never makes two.

A new provider is a new module here and one line in PROVIDERS (mypy checks the module
against the Protocol). Cloud SDKs are imported lazily, inside the functions.
"""

from __future__ import annotations

from conjure.infra.providers import aws, azure, gcp, local, ssh
from conjure.infra.providers.base import Provider

PROVIDERS: dict[str, Provider] = {
    "local": local,
    "ssh": ssh,
    "aws": aws,
    "gcp": gcp,
    "azure": azure,
}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ValueError(
            f"unknown provider {name!r}; known providers: {', '.join(PROVIDERS)}"
        ) from None
