"""``python -m engine serve|prepare|command``: the launcher alone (see :mod:`engine.main`)."""

import sys

from engine.main import main

sys.exit(main())
