"""``python -m portico ...`` is the same as ``portico ...``."""

import sys

from portico.cli import main

sys.exit(main())
