"""`python -m mprpcgen`."""

import sys

from .entry import main

sys.exit(main())
