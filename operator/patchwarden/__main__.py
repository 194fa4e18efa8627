"""``python -m patchwarden``: the same as the ``patchwarden`` command."""

import sys

from patchwarden.cli import main

sys.exit(main())
