import sys

from attngan.cli import main

sys.exit(main())
