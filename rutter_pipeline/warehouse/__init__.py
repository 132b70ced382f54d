"""The PostgreSQL warehouse: migrations, loader, connection registry, embedded server. No Dagster."""
