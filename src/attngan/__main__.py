"""`python -m attngan`: the same command line as `attngan`."""

import sys

from attngan.cli import main

sys.exit(main())
