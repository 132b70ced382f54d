"""Dagster wiring only: partitions, assets, checks, jobs, sensors, schedules, resources.

Every module here is thin: the work is done by the domain core (``rutter``, ``validation``,
``warehouse``), which never imports Dagster.
"""
