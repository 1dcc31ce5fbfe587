"""Conjure's workflows and their durable contract (models, keys). No I/O here."""
