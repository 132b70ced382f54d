"""The README's "For analysts" queries run as written and give the hand-computed answers."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from rutter_pipeline.warehouse import underwriting
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline_tests.warehouse.factories import Records
from rutter_pipeline_tests.warehouse.test_marts_metrics import APR, END, FEB, JAN, MAR, START, _fixture

pytestmark = pytest.mark.postgres

README = Path(__file__).resolve().parents[2] / "README.md"
D = Decimal


def analyst_queries() -> list[str]:
    text = README.read_text()
    section = text[text.index("## For analysts") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_the_readme_answers_revenue_refund_rate_and_repeat_rate(
    warehouse: str, loader: Loader, records: Records
) -> None:
    revenue, refund_rate, repeat_rate = analyst_queries()
    _fixture(records).load(loader, "m1")
    with psycopg.connect(warehouse) as conn:
        underwriting.refresh_monthly_metrics(conn, "m1", START, END, "USD")
        underwriting.refresh_cohort_retention(conn, "m1")
        conn.execute("INSERT INTO marts.fx_rates VALUES ('2024-03-31', 'GBP', 1.25)")
    run = {q: q.replace("'CONNECTION_ID'", "'m1'") for q in (revenue, refund_rate, repeat_rate)}
    with psycopg.connect(warehouse) as conn:
        # January sold in EUR, which has no rate yet: no total, and the currency to fill in
        assert conn.execute(run[revenue]).fetchall() == [
            (JAN, None, None, "EUR"),
            (FEB, D("100.00"), D("100.00"), None),  # EUR's zero row needs no rate
            (MAR, D("0"), D("-25.00"), None),  # January's refund, by refund date
            (APR, D("105.00"), D("105.00"), None),  # 80 USD + 20 GBP x 1.25
        ]
        conn.execute("INSERT INTO marts.fx_rates VALUES ('2023-12-31', 'EUR', 1.10)")
        assert conn.execute(run[revenue]).fetchall()[0] == (JAN, D("244.00"), D("234.00"), None)
        # refunds over sales: 10 / 244; none in February; March refunds with no sales; April none
        assert conn.execute(run[refund_rate]).fetchall() == [
            (JAN, D("0.0410")),
            (FEB, D("0.0000")),
            (MAR, None),
            (APR, D("0.0000")),
        ]
        # January: A and B new; February: A back, D new; March nobody; April: D back
        assert conn.execute(run[repeat_rate]).fetchall() == [
            (JAN, 2, D("0.0000")),
            (FEB, 2, D("0.5000")),
            (MAR, 0, None),
            (APR, 1, D("1.0000")),
        ]
