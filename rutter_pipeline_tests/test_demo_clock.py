"""The demo's simulated clock starts on one of the sandbox's sync ticks (see demo._on_sync_tick)."""

from datetime import UTC, datetime

from rutter_pipeline.demo import _on_sync_tick


def test_the_start_moves_back_to_the_last_tick_and_a_tick_stays() -> None:
    assert _on_sync_tick(datetime(2026, 11, 22, 20, 42, 31, tzinfo=UTC), 10) == datetime(
        2026, 11, 22, 20, 40, tzinfo=UTC
    )
    on_tick = datetime(2026, 11, 22, 20, 50, tzinfo=UTC)
    assert _on_sync_tick(on_tick, 10) == on_tick
    # ticks are multiples of the interval since the epoch, as the sandbox counts them
    assert int(_on_sync_tick(datetime(2026, 1, 1, 0, 7, 59, tzinfo=UTC), 15).timestamp()) % 900 == 0
