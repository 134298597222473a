"""``python -m warren_services.demo``: see the package docstring."""

import sys

from warren_services.demo import main

sys.exit(main())
