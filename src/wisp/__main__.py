"""``python -m wisp``: the ``wisp`` command, for environments without its script."""

from wisp.cli.main import main

raise SystemExit(main())
