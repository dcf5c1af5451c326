"""`python -m mlembed.mini`: the same command as `mlembed mini`."""

import sys

from mlembed.cli import main

sys.exit(main(["mini", *sys.argv[1:]]))
