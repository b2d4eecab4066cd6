"""``python -m active.cli ...``: the ``alpose`` command without the installed script."""

import sys

from active.cli.main import main

sys.exit(main())
