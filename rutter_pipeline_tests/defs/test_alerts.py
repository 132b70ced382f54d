"""run_failure_alert_sensor: a failed run (here: a failed schema check) alerts Sentry when SENTRY_DSN
is set (a real Sentry client posting to a Sentry-like endpoint on loopback), the log otherwise;
never with a secret."""

import gzip
import json
import logging
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from rutter_pipeline.defs.sensors import run_failure_alert_sensor
from rutter_pipeline.entities import ORDERS
from rutter_pipeline_tests.defs.test_ingest_assets import materialize
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


class SentryInbox(BaseHTTPRequestHandler):
    envelopes: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).envelopes.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def failed_run(pipeline: Pipeline, instance: dg.DagsterInstance) -> dg.RunFailureSensorContext:
    day = pipeline.today - timedelta(days=2)
    pipeline.sandbox.control.mutate(
        connection_id=pipeline.connection_id, entity="orders", day=day, kind="retype_field", field="total_price"
    )
    result = materialize(pipeline, instance, [ORDERS], day)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    (failure,) = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return dg.build_run_status_sensor_context(
        sensor_name=run_failure_alert_sensor.name,
        dagster_event=failure.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"settings": pipeline.settings},
    ).for_run_failure()


def test_failed_run_goes_to_sentry_without_secrets(pipeline: Pipeline, instance_factory) -> None:
    SentryInbox.envelopes = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SentryInbox)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pipeline.configure(sentry_dsn=f"http://publickey@127.0.0.1:{server.server_port}/42")
        instance = instance_factory([pipeline.connection_id])
        run_failure_alert_sensor(failed_run(pipeline, instance))
    finally:
        server.shutdown()
    assert SentryInbox.envelopes, "nothing reached Sentry"
    sent = b"\n".join(SentryInbox.envelopes).decode()
    events = [json.loads(line) for line in sent.splitlines() if line.startswith("{") and '"message"' in line]
    assert any("rutter-pipeline run failed" in json.dumps(e) for e in events)
    assert "orders_schema" in sent and "total_price" in sent, sent  # the check that failed, and why
    assert pipeline.access_token not in sent and pipeline.sandbox.client_secret not in sent


def test_without_sentry_the_alert_is_logged(
    pipeline: Pipeline, instance_factory, caplog: pytest.LogCaptureFixture
) -> None:
    assert pipeline.settings.sentry_dsn is None
    instance = instance_factory([pipeline.connection_id])
    with caplog.at_level(logging.ERROR, logger="rutter_pipeline.alerts"):
        run_failure_alert_sensor(failed_run(pipeline, instance))
    (record,) = [r for r in caplog.records if r.name == "rutter_pipeline.alerts"]
    assert "ALERT rutter-pipeline run failed" in record.getMessage()
    assert pipeline.connection_id in record.getMessage()
    assert pipeline.access_token not in record.getMessage()
