"""Run a small MPI code on an endpoint in MPI mode: pi by the midpoint rule, the intervals shared
among the MPI ranks and summed with a reduction (mpi4py), plus a shell function for contrast.

    python examples/mpi_pi.py ENDPOINT_ID [RANKS]

The endpoint's config needs an ``mpi`` section (docs/site-admin.md, "MPI functions"), and its
nodes OpenMPI (or MPICH) and mpi4py. The program travels as an argument of the command, so
nothing but Python and mpi4py has to be on the endpoint. Each rank reports which batch job it
ran in: all of them share one block of the endpoint.
"""

from __future__ import annotations

import json
import sys

from fnserve import Client, Executor, MPIFunction, ShellFunction

PROGRAM = r"""
import json, os, sys
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
n = int(sys.argv[1])
h = 1.0 / n
part = sum(4.0 / (1.0 + ((i + 0.5) * h) ** 2) for i in range(rank, n, size)) * h
pi = comm.reduce(part, op=MPI.SUM, root=0)
where = comm.gather({"rank": rank, "host": MPI.Get_processor_name(), "job": os.environ.get("SLURM_JOB_ID")}, root=0)
if rank == 0:
    print(json.dumps({"pi": pi, "ranks": size, "where": where}))
"""

# $PARSL_MPI_PREFIX is put in front: the endpoint's launcher (mpiexec -n 2 ..., srun ...).
compute_pi = MPIFunction("python3 -c {program} {intervals}", walltime=120, name="mpi_pi")
hostname = ShellFunction("hostname && echo {greeting}", walltime=30)


def main() -> None:
    endpoint_id = sys.argv[1]
    ranks = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    client = Client()
    with Executor(endpoint_id, client=client, resource_specification={"num_nodes": 1, "ranks_per_node": ranks}) as mpi:
        done = mpi.submit(compute_pi, program=PROGRAM, intervals=1_000_000).result(timeout=300)
    if done["returncode"] != 0:
        sys.exit(f"the MPI program failed ({done['returncode']}):\n{done['stderr']}")
    report = json.loads(done["stdout"])
    print(f"pi = {report['pi']:.12f} from {report['ranks']} MPI ranks")
    for r in report["where"]:
        print(f"  rank {r['rank']} on {r['host']} in batch job {r['job']}")
    with Executor(endpoint_id, client=client) as plain:
        shell = plain.submit(hostname, greeting="no MPI here").result(timeout=300)
    print("shell function:", shell["stdout"].split()[0], "returned", shell["returncode"])
    print(json.dumps({"pi": report["pi"], "ranks": report["ranks"], "where": report["where"]}))


if __name__ == "__main__":
    main()
