"""Jobs over the ingestion assets."""

import dagster as dg

# The landing and warehouse assets of every entity (and their checks); marts refresh by automation.
INGEST_SELECTION = dg.AssetSelection.groups("landing", "warehouse")

# Steps run where the code location's executor says (definitions.py, defs/executors.py): in the run's
# own process by default, on Celery workers with RUTTER_EXECUTOR=celery.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=INGEST_SELECTION,
    description="Landing and warehouse assets of every entity for the selected partitions.",
)
