"""rutter-pipeline: Rutter commerce data into PostgreSQL, orchestrated by Dagster.

The domain core (``rutter``, ``sandbox``, ``warehouse``, ``validation``, ``webhooks``) never imports
Dagster; ``defs`` is the thin Dagster wiring over it.
"""

__version__ = "0.1.0"
