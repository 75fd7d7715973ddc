"""The site manager's record of tasks on the engine and the block each started in."""

from concurrent.futures import Future

from fnserve.messages import TaskOutput
from site_manager.engine_tasks import EngineTasks


def _start(task_id: str, block: str, runtime: str = "") -> TaskOutput:
    values = {"block": block} | ({"runtime": runtime} if runtime else {})
    return TaskOutput(task_id=task_id, seq=-1, time=0.0, kind="start", values=values)


def test_a_start_marker_names_the_block_of_a_task_on_the_engine_only():
    tasks = EngineTasks()
    tasks.add("t1", Future())
    named = tasks.note_blocks([_start("t1", "3", "podman"), _start("other", "1"), _start("t1-no-block", "")])
    assert tasks.blocks == {"t1": ("podman", "3")}
    assert named == {("podman", "3")}  # the engine is told that block had a worker (Engine.note_seen)
    tasks.note_blocks([_start("t1", "4")])  # no runtime named: the host's
    assert tasks.blocks["t1"] == ("host", "4")


def test_a_rerun_forgets_the_old_block_and_an_old_future_does_not_forget_the_new_one():
    tasks = EngineTasks()
    first, second = Future(), Future()
    tasks.add("t1", first)
    tasks.note_blocks([_start("t1", "0")])
    tasks.add("t1", second)  # re-run: its new worker's start marker will name its block
    assert "t1" not in tasks.blocks
    tasks.forget("t1", first)  # the first attempt's callback, late
    assert tasks.futures["t1"] is second
    tasks.forget("t1", second)
    assert tasks.futures == {} and tasks.blocks == {}


def test_a_block_named_by_a_start_marker_counts_as_running_until_a_status_poll_says_otherwise():
    """A start marker can come before the status poll lists the block's manager: the block had
    workers (not a runtime that cannot start them) and is running, not lost (a lost block's job
    is cancelled)."""
    import threading

    from site_manager.engine_blocks import EngineBlocks
    from site_manager.scaling import classify_blocks

    blocks = EngineBlocks.__new__(EngineBlocks)
    blocks._lock, blocks._seen_blocks, blocks._connected_blocks = threading.Lock(), set(), set()
    blocks.saw_blocks({("host", "3")})
    view = classify_blocks({"3": "RUNNING"}, blocks._connected_blocks, blocks._seen_blocks)
    assert view.running == ("3",) and view.lost == ()
    assert "3" in blocks._seen_blocks  # had workers: if it ends now, its tasks are lost, not "did not start"
