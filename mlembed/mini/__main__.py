"""`python -m mlembed.mini`: the ml-embed-mini pipeline."""

from mlembed.mini.pipeline import main

raise SystemExit(main())
