"""Jobs over the ingestion assets."""

import dagster as dg

from rutter_pipeline.defs.executors import executor_from_env

# The landing and warehouse assets of every entity (and their checks); marts refresh by automation.
INGEST_SELECTION = dg.AssetSelection.groups("landing", "warehouse")

# Steps run in the run's own process: the per-step process start of the multiprocess executor costs
# seconds, more than a partition's work; concurrency comes from runs (one per connection) instead.
# RUTTER_EXECUTOR=celery sends them to Celery workers on other machines (defs/executors.py).
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=INGEST_SELECTION,
    executor_def=executor_from_env(),
    description="Landing and warehouse assets of every entity for the selected partitions.",
)
