"""Starting points for ``fnserve endpoint configure NAME --template local|slurm|pbs|kubernetes``.

Each is a documented YAML endpoint config; ``{run_dir}`` is filled in. The endpoint's identity
(id, secret, forwarder address) is not here: ``fnserve endpoint start`` registers the endpoint
on first start and keeps it in ``credentials.yaml`` next to this file.
"""

from __future__ import annotations

_HEADER = """\
# fnserve endpoint configuration ({template} template). Edit, then `fnserve endpoint start NAME`.
# Sections map onto Parsl's classes (https://parsl.readthedocs.io):
#   engine   -> parsl.executors.HighThroughputExecutor options
#   provider -> where blocks of nodes come from (type: local, slurm, pbspro, torque, kubernetes;
#               every other key is an argument of that Parsl provider class)
#   launcher -> how workers start inside a block (type: single_node, srun, mpiexec, aprun)
#   scaling  -> how many blocks, how big, and how long an idle endpoint keeps them
# A typo is refused when the endpoint starts, naming the key and the allowed ones.

# Where the site manager keeps its state (unacked results, Parsl's submit scripts and logs).
run_dir: {run_dir}

engine:
  max_workers_per_node: {workers:<14}# workers (concurrent tasks) per node
  cores_per_worker: 1                 # cores each worker needs; caps workers per node
  # mem_per_worker: 2                 # GB each worker needs; caps workers per node
  prefetch_capacity: 0                # tasks a node may hold beyond its idle workers
  heartbeat_period: {hb_period:<18}# seconds between worker <-> site manager heartbeats
  heartbeat_threshold: {hb_threshold:<15}# seconds of silence before a block counts as lost
  # address: 10.0.0.5                 # this host's address as compute nodes see it
                                      # (the interchange binds it; default: loopback for local blocks)
  encrypted: true                     # CurveZMQ interchange <-> workers; off lets anyone who
                                      # reaches the interchange run code as you

# Serializers workers may load (default: any). Arguments as JSON only, no pickles:
# allowed_serializers: [dill-code, source, json-data]
# Seconds past a task's walltime before its worker is killed (walltime_exceeded).
# walltime_grace: 5
"""

_LOCAL = """\
provider:
  type: local                         # parsl.providers.LocalProvider: workers on this host

launcher:
  type: single_node

scaling:
  init_blocks: 1                      # blocks started with the endpoint
  min_blocks: 1                       # blocks kept even when idle
  max_blocks: 1
  nodes_per_block: 1
  max_idletime: 120                   # seconds idle before blocks above min_blocks are cancelled

# Shell lines each block runs before starting workers.
worker_init: ""
"""

_SLURM = """\
provider:
  type: slurm                         # parsl.providers.SlurmProvider: blocks are sbatch jobs
  partition: debug
  # account: myproject
  # qos: normal
  # constraint: haswell
  walltime: "01:00:00"                # each block's job time limit
  exclusive: false                    # true: whole nodes per block
  # cores_per_node: 32
  # mem_per_node: 64                  # GB
  scheduler_options: ""               # extra '#SBATCH ...' lines, verbatim

launcher:
  type: srun                          # parsl.launchers.SrunLauncher: one worker pool per node
  # overrides: "--cpu-bind=none"

scaling:
  init_blocks: 0                      # 0: the first task starts a block (cold start)
  min_blocks: 0
  max_blocks: 2
  nodes_per_block: 1
  max_idletime: 120                   # seconds idle before blocks are cancelled (nodes returned)

# Shell lines each block runs before starting workers: make fnserve[site] importable there.
worker_init: "{worker_init}"

# MPI tasks (resource_specification: num_nodes, ranks_per_node, num_ranks) in Parsl's MPI mode,
# on blocks of their own; each task's command gets $PARSL_MPI_PREFIX (docs/site-admin.md).
# mpi:
#   launcher: openmpi                 # openmpi | mpiexec (MPICH) | srun | aprun
#   nodes_per_block: 2                # a task may ask for at most this many nodes
#   max_workers_per_block: 2          # MPI tasks at once per block
#   max_blocks: 1
#   launcher_options: ""              # e.g. --oversubscribe
"""

_PBS = """\
provider:
  type: pbspro                        # parsl.providers.PBSProProvider: blocks are qsub jobs
  queue: workq
  # account: myproject
  cpus_per_node: 64                   # becomes ncpus in the select statement
  select_options: ""                  # e.g. "mpiprocs=1:ngpus=4"
  walltime: "01:00:00"
  scheduler_options: ""               # extra '#PBS ...' lines, verbatim

launcher:
  type: mpiexec                       # parsl.launchers.MpiExecLauncher: one worker pool per node
  bind_cmd: "--bind-to"
  overrides: "--depth=64 --ppn 1"     # site-specific mpiexec flags (example for Cray PALS)

scaling:
  init_blocks: 0
  min_blocks: 0
  max_blocks: 2
  nodes_per_block: 2
  max_idletime: 300

# Shell lines each block runs before starting workers: make fnserve[site] importable there.
worker_init: "{worker_init}"
"""

_KUBERNETES = """\
# Pods connect OUT to the interchange at engine.address, on engine.worker_port: run this
# endpoint where pods can reach it (in the cluster, as a Deployment with a Service exposing
# that port; or on a host with an address routable from the pods) and put that address above
# (e.g. address: fnserve-endpoint.science.svc.cluster.local; worker_port: 54000).
# engine.encrypted (on by default) needs Parsl's CurveZMQ keys in the pods at the same path:
# mount <run_dir>/engine/fnserve/certificates there (provider.persistent_volumes), or, only
# where no one else can reach the interchange's port, set engine.encrypted: false.
# Needs `pip install 'fnserve[kubernetes]'` and a kubeconfig (or the pod's service account).
provider:
  type: kubernetes                    # parsl.providers.KubernetesProvider: blocks are pods
  image: registry.example.org/fnserve-worker:latest   # containers/Dockerfile, pushed where the cluster pulls
  namespace: science
  init_cpu: 1                         # requests
  init_mem: 1Gi
  max_cpu: 4                          # limits
  max_mem: 8Gi
  # service_account_name: fnserve-worker
  # secret: regcred                   # image pull secret
  # persistent_volumes: [[shared-data, /data]]
  # extra_limits: {{"nvidia.com/gpu": "1"}}

scaling:
  init_blocks: 0
  min_blocks: 0
  max_blocks: 4
  nodes_per_block: 1
  max_idletime: 300

# Shell lines each pod runs before starting workers (the image already has fnserve[site]).
worker_init: "{worker_init}"
"""

TEMPLATES: dict[str, str] = {"local": _LOCAL, "slurm": _SLURM, "pbs": _PBS, "kubernetes": _KUBERNETES}


def render(template: str, run_dir: str, worker_init: str = "") -> str:
    """The YAML text of ``template`` (one of :data:`TEMPLATES`) for an endpoint in ``run_dir``."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known: {', '.join(sorted(TEMPLATES))}")
    remote = template != "local"
    header = _HEADER.replace("  # address: 10.0.0.5                 # this host's address as compute nodes see it\n",
                             "  address: fnserve-endpoint.science.svc.cluster.local   # where pods reach this endpoint\n"
                             "  worker_port: 54000                  # the interchange's worker port, fixed for a Service\n"
                             ) if template == "kubernetes" else _HEADER
    header = header.format(
        template=template,
        run_dir=run_dir,
        workers=2 if template == "local" else 4,
        hb_period=30 if remote else 5,
        hb_threshold=120 if remote else 30,
    )
    return header + "\n" + TEMPLATES[template].format(worker_init=worker_init.replace('"', '\\"'))
