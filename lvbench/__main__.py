"""``python -m lvbench``: the ``lvbench`` command."""

from lvbench.cli import main

raise SystemExit(main())
