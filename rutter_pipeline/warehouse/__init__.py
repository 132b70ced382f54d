"""The PostgreSQL warehouse: migrations, loader, marts, embedded server. No Dagster."""
