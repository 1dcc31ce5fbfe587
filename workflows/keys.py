"""Search attribute keys and fixed workflow ids: part of the durable contract."""

from temporalio.common import SearchAttributeKey

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

COUNTER_WORKFLOW_ID = "conjure-run-counter"
POOL_WORKFLOW_ID = "conjure-pool"
PIPELINE_COUNTER_WORKFLOW_ID = "conjure-pipeline-counter"


def pipeline_workflow_id(pipeline_id: int) -> str:
    return f"pipeline-{pipeline_id}"


def run_workflow_id(run_id: int) -> str:
    return f"run-{run_id}"


def machine_task_queue(machine_id: str) -> str:
    return f"machine-{machine_id}"
