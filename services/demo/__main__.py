"""``python -m warren.services.demo``: see the package docstring."""

import sys

from . import main

sys.exit(main())
