"""``python -m site_manager --config endpoint.yaml``"""

import sys

from node_manager import light_parsl

# The daemon imports Parsl's executors, providers and launchers by name only: not Parsl's package
# inits, which import all of Parsl (DataFlowKernel, every provider, the monitoring database) and
# tripled the time a site manager killed and started again takes to import what it uses.
light_parsl.skip_package_inits()

from site_manager.main import main  # noqa: E402

sys.exit(main())
