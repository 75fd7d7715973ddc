"""``python -m site_manager --config endpoint.yaml``"""

import sys

from site_manager.main import main

sys.exit(main())
