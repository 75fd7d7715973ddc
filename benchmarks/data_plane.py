"""Large data round trips: a numpy array in, an array of the same size out, by payload size.

    python benchmarks/data_plane.py [--sizes 1,100,1024] [--repeats 5]

In one run, on this machine, for each size (MiB):

* fnserve: ``Client.submit(f, [array])`` then ``get_result``: the embedded stack (gunicorn,
  forwarder, site manager, HTEX workers); above 4 MiB the argument and the result go by reference
  through the service's object store (upload, worker download, worker upload, SDK download);
* bare Parsl HTEX (LocalProvider, no DataFlowKernel): ``ex.submit(f, {}, array).result()``, the
  bytes inside HTEX's own ZMQ messages;
* Dask distributed LocalCluster: ``client.submit(f, array).result()``;
* the floor: the same bytes sent to a process over loopback TCP and sent back (raw sockets, no
  serialization), like scp without encryption.

Each is timed from the call to the result in hand; percentiles over ``--repeats`` and the ratio
of each to the floor. The result file records commit, date, host, CPU, load and versions
(``meta``), and the peak RSS (VmHWM) of every process of the stack by role: web, forwarder,
Redis, site manager, interchange and worker pool only move bytes (bounded chunks), the HTEX
worker running the function holds the object it computes on.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, summarize, write_results

from fnserve.cli.processes import command_line, is_htex_worker, parent_pid, peak_rss_mib, process_tree, tagged_processes
from peers import bare_htex, dask_client

MIB = 1024 * 1024

ECHO = """
def echo(a):
    return a
"""


def echo(a: Any) -> Any:
    return a


def _array(mib: int) -> Any:
    import numpy as np

    return np.random.default_rng(mib).random(mib * MIB // 8)


def _check(got: Any, sent: Any) -> None:
    import numpy as np

    assert got.shape == sent.shape and np.array_equal(got[:: max(1, len(got) // 1000)], sent[:: max(1, len(sent) // 1000)])


def _time(fn: Callable[[], Any], repeats: int) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# -- the floor: raw loopback TCP -------------------------------------------------------------


def _echo_server(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            header = conn.recv(16, socket.MSG_WAITALL)
            size = int(header)
            buf = bytearray(size)
            view = memoryview(buf)
            got = 0
            while got < size:
                got += conn.recv_into(view[got:], min(size - got, 4 * MIB))
            conn.sendall(buf)


def raw_tcp_round_trip(data: bytes | memoryview, port: int) -> None:
    size = len(data)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"{size:16d}".encode())
        s.sendall(data)
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            got += s.recv_into(view[got:], min(size - got, 4 * MIB))


def _role(pid: int) -> str:
    """What a process of the stack is, from its command line (workers materialize objects)."""
    cmd = command_line(pid)
    for needle, role in (("process_worker_pool", "worker_pool"), ("gunicorn", "web"), ("web_service.server", "web"),
                         ("web_service.forwarder", "forwarder"), ("redis-server", "redis"),
                         ("interchange", "interchange"), ("site_manager", "site_manager"), ("triggers", "triggers")):
        if needle in cmd:
            return role
    return cmd[:40] or "gone"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (0 if it is gone)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    t = os.times()  # this process, its threads included
    return t.user + t.system


def stack_pids(pids: list[int | None]) -> set[int]:
    """The stack's processes: the trees under ``pids`` and the detached worker pool (by tag)."""
    tree = {p for root in pids if root is not None for p in process_tree(root)}
    return tree | set(tagged_processes(f"{os.environ['FNSERVE_HOME']}{os.sep}", prefix=True))


def cpu_by_role(before: dict[int, float], sdk_before: float, calls: int) -> dict[str, float]:
    """CPU seconds per call by role since ``before`` (pid: CPU seconds), the SDK's included."""
    out = {"sdk": (_self_cpu() - sdk_before) / calls}
    for pid, was in before.items():
        role = "worker" if is_htex_worker(pid) else _role(pid)
        out[role] = out.get(role, 0.0) + (_cpu_seconds(pid) - was) / calls
    out["total"] = sum(out.values())
    return {k: round(v, 3) for k, v in sorted(out.items()) if v >= 0.001}


def peak_rss_by_role(pids: list[int | None]) -> dict[str, float]:
    """Largest peak RSS (VmHWM, MiB) of any one process per role, over the stack's process trees.

    Only ``worker`` (the HTEX worker running the function) holds the object: the others move bytes."""
    peaks: dict[str, float] = {}
    tree = stack_pids(pids)  # the worker pool is started detached (Parsl's provider): found by tag
    workers = {pid for pid in tree if is_htex_worker(pid)}
    pools = {parent_pid(pid) for pid in workers}  # the pool may have retitled itself
    for pid in tree:
        hwm = peak_rss_mib(pid)
        if hwm is not None:
            role = "worker" if pid in workers else "worker_pool" if pid in pools else _role(pid)
            peaks[role] = max(peaks.get(role, 0.0), hwm)
    return dict(sorted(peaks.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100", help="MiB, comma-separated (1 GiB: 1024)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=18780, help="the stack's web port (+1, +2: forwarder, Redis)")
    parser.add_argument("--skip", default="", help="comma-separated peers to leave out (htex,dask)")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        listener = socket.create_server(("127.0.0.1", 0))
        print(listener.getsockname()[1], flush=True)
        _echo_server(listener)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    arrays = {mib: _array(mib) for mib in sizes}
    # Commit, date, host, CPU, load and versions go under "meta" (common.write_results).
    results: dict[str, Any] = {
        "benchmark": "data_plane", "repeats": args.repeats, "sizes_mib": sizes, "systems": {},
        "load_average_at_start": os.getloadavg(),
        # CPU seconds per round trip by process role (the work, whatever the waiting).
        "cpu_s_per_round_trip": {},
    }

    def record(system: str, mib: int, samples: list[float]) -> None:
        s = summarize(samples)
        s["mib_per_s_p50"] = 2 * mib / (s["p50_ms"] / 1e3)  # bytes moved both ways
        results["systems"].setdefault(system, {})[str(mib)] = s
        print(f"{system:10s} {mib:5d} MiB  p50 {s['p50_ms']:9.1f} ms  p90 {s['p90_ms']:9.1f} ms  "
              f"{s['mib_per_s_p50']:8.1f} MiB/s", flush=True)

    # The floor's far end is another process, as scp's would be.
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--echo-server"], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())  # type: ignore[union-attr]
    try:
        for mib in sizes:
            data = memoryview(arrays[mib]).cast("B")
            cpu0, sdk0 = _cpu_seconds(server.pid), _self_cpu()
            record("raw_tcp", mib, _time(lambda data=data: raw_tcp_round_trip(data, port), args.repeats))
            results["cpu_s_per_round_trip"].setdefault("raw_tcp", {})[str(mib)] = {  # the warm call included
                "client": round((_self_cpu() - sdk0) / (args.repeats + 1), 3),
                "server": round((_cpu_seconds(server.pid) - cpu0) / (args.repeats + 1), 3)}
    finally:
        server.kill()

    with embedded_stack(args.port, engine={"max_workers_per_node": args.workers}) as (client, endpoint_id):
        fid = client.register_source(ECHO, "echo")
        for mib in sizes:
            arr = arrays[mib]

            def fnserve_call(arr: Any = arr) -> None:
                _check(client.get_result(client.submit(fid, endpoint_id, [arr]), timeout=600), arr)

            from fnserve.cli import stack

            procs = stack.processes()
            roots = [procs[name].pid() for name in ("web", "forwarder", "redis")] + [stack.endpoint_process("bench").pid()]
            fnserve_call()  # warm: the workers exist before their CPU is counted
            before, sdk0 = {pid: _cpu_seconds(pid) for pid in stack_pids(roots)}, _self_cpu()
            record("fnserve", mib, _time(fnserve_call, args.repeats))
            results["cpu_s_per_round_trip"].setdefault("fnserve", {})[str(mib)] = cpu_by_role(before, sdk0,
                                                                                              args.repeats + 1)
        # The service's processes must not hold whole objects: their peak RSS (VmHWM) after the
        # largest round trips, next to the largest payload.
        results["peak_rss_mib"] = peak_rss_by_role(roots)
        results["peak_rss_largest_object_mib"] = max(sizes)
        print(f"peak RSS per process, MiB (largest object {max(sizes)} MiB): {results['peak_rss_mib']}", flush=True)

    if "htex" not in skip:
        with bare_htex(args.workers) as ex:
            for mib in sizes:
                arr = arrays[mib]
                record("htex", mib, _time(lambda arr=arr: _check(ex.submit(echo, {}, arr).result(timeout=600), arr), args.repeats))
    if "dask" not in skip:
        try:
            with dask_client(args.workers) as dc:
                for mib in sizes:
                    arr = arrays[mib]
                    record("dask", mib, _time(lambda arr=arr: _check(dc.submit(echo, arr, pure=False).result(), arr), args.repeats))
        except ImportError as exc:
            results["dask_missing"] = str(exc)

    floor = results["systems"]["raw_tcp"]
    results["ratio_to_raw_tcp_p50"] = {
        system: {m: round(v["p50_ms"] / floor[m]["p50_ms"], 2) for m, v in by_size.items()}
        for system, by_size in results["systems"].items() if system != "raw_tcp"
    }
    results["load_average_at_end"] = os.getloadavg()
    path = write_results("data_plane", results)
    print(f"ratios (p50 time / raw TCP): {results['ratio_to_raw_tcp_p50']}\nwrote {path}")


if __name__ == "__main__":
    main()
