#!/usr/bin/python3 -IS
"""STAND-IN for a PBS Pro server's `qsub`, `qstat` and `qdel` (no PBS Pro can be installed here):
the tests put it on PATH under those three names. It hands the job script Parsl's PBSProProvider
wrote to the real local Slurm (`sbatch`; the `#PBS` lines are comments to it, `-o`/`-e`/`-N` and
the walltime are carried over), prints the job id as PBS Pro does (`NUMBER.SERVER`), answers
`qstat -x -f -F json` in PBS Pro 2022's JSON layout (see tests/data/pbspro_qstat_f_F_json.json)
from Slurm's view of the job, and `qdel` cancels it. Every call is appended to $PBS_STANDIN_LOG.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

SERVER = "pbs-standin"
STATES = {"PENDING": "Q", "CONFIGURING": "Q", "RUNNING": "R", "COMPLETING": "E", "SUSPENDED": "S"}


def log(argv: list[str]) -> None:
    path = os.environ.get("PBS_STANDIN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(argv) + "\n")


def qsub(args: list[str]) -> int:
    opts = {"-q": None, "-A": None}
    rest = []
    it = iter(args)
    for a in it:
        if a in opts:
            opts[a] = next(it)
        else:
            rest.append(a)
    if len(rest) != 1 or not os.path.isfile(rest[0]):
        sys.stderr.write("usage: qsub [-q queue] [-A account] script\n")
        return 2
    script = open(rest[0]).read()
    directive = lambda flag: (re.findall(rf"^#PBS {flag} (\S+)", script, re.MULTILINE) or [None])[-1]
    sbatch = ["sbatch", "--parsable", "--partition=debug"]
    for flag, opt in (("-o", "--output"), ("-e", "--error"), ("-N", "--job-name")):
        if directive(flag):
            sbatch.append(f"{opt}={directive(flag)}")
    walltime = re.search(r"^#PBS -l walltime=(\S+)", script, re.MULTILINE)
    if walltime:
        sbatch.append(f"--time={walltime.group(1)}")
    out = subprocess.run([*sbatch, rest[0]], capture_output=True, text=True, check=False)
    if out.returncode:
        sys.stderr.write(out.stderr)
        return out.returncode
    print(f"{out.stdout.strip().split(';')[0]}.{SERVER}")
    return 0


def _slurm_state(number: str) -> tuple[str, str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", number], capture_output=True, text=True, check=False)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    return fields.get("JobState", ""), fields.get("JobName", ""), fields.get("ExitCode", "0:0").split(":")[0]


def qstat(args: list[str]) -> int:
    if "-F" not in args or "json" not in args:
        sys.stderr.write("qstat stand-in: only `qstat -x -f -F json JOB...` is served\n")
        return 2
    ids = [a for a in args if a[0].isdigit()]
    jobs = {}
    for job in ids:
        state, name, code = _slurm_state(job.split(".")[0])
        if not state:
            sys.stderr.write(f"qstat: Unknown Job Id {job}\n")
            continue
        entry = {"Job_Name": name, "job_state": STATES.get(state, "F"), "queue": "workq", "server": SERVER}
        if entry["job_state"] == "F":
            entry["Exit_status"] = int(code)
        jobs[job] = entry
    print(json.dumps({"timestamp": int(time.time()), "pbs_version": "2022.1.3", "pbs_server": SERVER, "Jobs": jobs}, indent=4))
    return 0


def qdel(args: list[str]) -> int:
    ids = [a.split(".")[0] for a in args if a[0].isdigit()]
    return subprocess.run(["scancel", *ids], check=False).returncode if ids else 0


if __name__ == "__main__":
    name = os.path.basename(sys.argv[0])
    log([name, *sys.argv[1:]])
    sys.exit({"qsub": qsub, "qstat": qstat, "qdel": qdel}[name](sys.argv[1:]))
