"""`python -m mlembed.cli` is `mlembed` (what `accelerate launch -m` and `torchrun -m` run)."""

import sys

from mlembed.cli import main

sys.exit(main())
