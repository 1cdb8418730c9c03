"""`python -m mprpcgen`."""

import sys

from .cli import main

sys.exit(main())
