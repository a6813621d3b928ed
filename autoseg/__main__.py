"""``python -m autoseg`` is the same as the ``autoseg`` command."""

import sys

from autoseg.cli import main

sys.exit(main())
