"""The main module of a worker pool's spawned children (workers, Parsl's Manager server).

multiprocessing's spawn makes each child import its parent's main module before it unpickles
what to run (``__main__.worker``). The parent runs Parsl's ``process_worker_pool`` as its main
module; this one skips Parsl's package inits (:mod:`node_manager.light_parsl`), imports that
module under its own name (its ``if __name__ == "__main__"`` part does not run) and offers its
names, so ``__main__.worker`` resolves to the same function.
"""

from node_manager import light_parsl

light_parsl.skip_package_inits()

from parsl.executors.high_throughput import process_worker_pool as _pool  # noqa: E402

globals().update({k: v for k, v in vars(_pool).items() if not k.startswith("__")})
