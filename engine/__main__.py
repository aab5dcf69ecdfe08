"""``python -m engine ...`` is the same as ``portico ...``."""

import sys

from engine.cli import main

sys.exit(main())
