"""``python -m fjdl``: the same as the ``fjdl`` command."""

import sys

from fjdl.cli import main

sys.exit(main())
