"""Scaling decisions and lost blocks, fed as plain values (no Parsl, no batch system)."""

from __future__ import annotations

from site_manager.failures import BlockLost, failure_result
from site_manager.scaling import BlockView, classify_blocks, decide, idle_from

LIMITS = {"min_blocks": 0, "max_blocks": 2, "max_idletime": 60.0}


def test_cold_start_adds_one_block_at_once() -> None:
    d = decide(10.0, live_blocks=0, outstanding=5, idle_since=None, **LIMITS)
    assert (d.add, d.remove, d.idle_since) == (1, 0, None)


def test_busy_endpoint_keeps_its_blocks_and_is_not_idle() -> None:
    d = decide(10.0, live_blocks=2, outstanding=1, idle_since=3.0, **LIMITS)
    assert (d.add, d.remove, d.idle_since) == (0, 0, None)


def test_idle_clock_starts_when_work_runs_out_and_blocks_go_after_max_idletime() -> None:
    d = decide(100.0, live_blocks=2, outstanding=0, idle_since=None, **LIMITS)
    assert (d.add, d.remove, d.idle_since) == (0, 0, 100.0)
    d = decide(159.0, live_blocks=2, outstanding=0, idle_since=d.idle_since, **LIMITS)
    assert d.remove == 0  # 59 s idle: not yet
    d = decide(160.0, live_blocks=2, outstanding=0, idle_since=d.idle_since, **LIMITS)
    assert (d.remove, d.idle_since) == (2, 100.0)


def test_scale_in_keeps_min_blocks_and_min_blocks_are_restored() -> None:
    keep = {**LIMITS, "min_blocks": 1}
    assert decide(500.0, live_blocks=2, outstanding=0, idle_since=0.0, **keep).remove == 1
    assert decide(500.0, live_blocks=1, outstanding=0, idle_since=0.0, **keep).remove == 0
    d = decide(500.0, live_blocks=0, outstanding=0, idle_since=0.0, **keep)  # the kept block was lost
    assert (d.add, d.remove) == (1, 0)


def test_load_scales_out_to_enough_blocks_counting_pending_ones() -> None:
    # 4 worker slots per block: 10 tasks want 3 blocks; 1 is already up or pending.
    d = decide(1.0, live_blocks=1, outstanding=10, idle_since=None, min_blocks=0, max_blocks=8, max_idletime=60,
               slots_per_block=4)
    assert d.add == 2
    assert decide(1.0, live_blocks=3, outstanding=10, idle_since=None, min_blocks=0, max_blocks=8, max_idletime=60,
                  slots_per_block=4).add == 0
    assert decide(1.0, live_blocks=0, outstanding=100, idle_since=None, min_blocks=0, max_blocks=2, max_idletime=60,
                  slots_per_block=4).add == 2


def test_no_block_beyond_max_blocks() -> None:
    assert decide(1.0, live_blocks=0, outstanding=9, idle_since=None, min_blocks=0, max_blocks=0, max_idletime=1).add == 0


def test_blocks_are_classified_by_provider_state_and_connected_workers() -> None:
    states = {"0": "RUNNING", "1": "PENDING", "2": "RUNNING", "3": "RUNNING", "4": "CANCELLED", "5": "PENDING"}
    view = classify_blocks(states, connected={"0", "5"}, seen={"0", "3", "5"})
    # 3 had workers and lost them: gone, even though the provider's last poll says RUNNING.
    assert view == BlockView(pending=("1",), running=("0", "2", "5"), lost=("3",))
    assert view.live == 4


def test_a_lost_block_fails_its_tasks_with_a_clear_error_naming_it() -> None:
    exc = BlockLost(block="0", job_id="4711", host="nid00042", threshold=120)
    result = failure_result("task-1", exc, {"site_received": 1.0})
    assert result.ok is False and result.error is not None
    assert result.error.code == "worker_lost"
    assert "block 0 (batch job 4711) on nid00042 was lost" in result.error.message
    assert "120 s" in result.error.message
    assert result.timings == {"site_received": 1.0}


def test_sequential_short_calls_never_count_as_idle_between_samples():
    # Heartbeat samples at t=100 and t=102 both find nothing outstanding (each call spends most of
    # its time outside the engine), but a task finished at t=101.9: the block is not idle for 1 s.
    first = decide(100.0, live_blocks=1, outstanding=0, idle_since=None, min_blocks=0, max_blocks=1, max_idletime=1)
    second = decide(102.0, live_blocks=1, outstanding=0, idle_since=idle_from(first.idle_since, 101.9),
                    min_blocks=0, max_blocks=1, max_idletime=1)
    assert second.remove == 0
    third = decide(103.0, live_blocks=1, outstanding=0, idle_since=idle_from(second.idle_since, 101.9),
                   min_blocks=0, max_blocks=1, max_idletime=1)
    assert third.remove == 1  # really idle since 101.9
    assert idle_from(None, 101.9) is None and idle_from(100.0, None) == 100.0
