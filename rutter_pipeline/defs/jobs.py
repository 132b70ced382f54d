"""Jobs over the ingestion assets."""

import dagster as dg

INGEST_SELECTION = dg.AssetSelection.groups("rutter")

# Steps run in the run's own process: the per-step process start of the multiprocess executor costs
# seconds, more than a partition's work; concurrency comes from runs (one per connection) instead.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=INGEST_SELECTION,
    executor_def=dg.in_process_executor,
    description="Landing and warehouse assets of every entity for the selected partitions.",
)
