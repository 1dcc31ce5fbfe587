"""Search attribute keys and fixed workflow ids: part of the durable contract."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from conjure.workflows.models import RunSpec, RunState

RUN_ID = SearchAttributeKey.for_int("ConjureRunId")
STATE = SearchAttributeKey.for_keyword("ConjureState")
MACHINE_TYPE = SearchAttributeKey.for_keyword("ConjureMachineType")
COMMAND = SearchAttributeKey.for_text("ConjureCommand")
PIPELINE_ID = SearchAttributeKey.for_int("ConjurePipelineId")

# name -> type, as `temporal server start-dev --search-attribute NAME=TYPE` takes them.
SEARCH_ATTRIBUTES = {
    "ConjureRunId": "Int",
    "ConjureState": "Keyword",
    "ConjureMachineType": "Keyword",
    "ConjureCommand": "Text",
    "ConjurePipelineId": "Int",
}

# Memo entry of a run workflow: the command's exit code, so a listing shows
# `Failed (137)` from visibility alone.
EXIT_CODE_MEMO = "conjure_exit_code"

COUNTER_WORKFLOW_ID = "conjure-run-counter"
POOL_WORKFLOW_ID = "conjure-pool"
PIPELINE_COUNTER_WORKFLOW_ID = "conjure-pipeline-counter"
HYPER_COUNTER_WORKFLOW_ID = "conjure-hyper-counter"


def pipeline_workflow_id(pipeline_id: int) -> str:
    return f"pipeline-{pipeline_id}"


def hyper_workflow_id(hyper_id: int) -> str:
    return f"hyper-{hyper_id}"


def run_workflow_id(run_id: int) -> str:
    return f"run-{run_id}"


def machine_task_queue(machine_id: str) -> str:
    return f"machine-{machine_id}"


def run_search_attributes(run_id: int, spec: RunSpec) -> TypedSearchAttributes:
    """What a new run workflow starts with, whoever starts it (the client, a pipeline)."""
    pairs: list[SearchAttributePair] = [
        SearchAttributePair(RUN_ID, run_id),
        SearchAttributePair(STATE, RunState.REQUESTED.value),
        SearchAttributePair(MACHINE_TYPE, spec.machine_type.name),
        SearchAttributePair(COMMAND, spec.command[:2000]),
    ]
    if spec.pipeline_id is not None:
        pairs.append(SearchAttributePair(PIPELINE_ID, spec.pipeline_id))
    return TypedSearchAttributes(pairs)
