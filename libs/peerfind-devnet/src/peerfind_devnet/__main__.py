"""`python -m peerfind_devnet up|down|status|stop|start` (see `peerfind_devnet._cli`)."""

import sys

from peerfind_devnet._cli import main

sys.exit(main())
