"""``python -m embcache``: the ``embcache`` command, defined in embcache._tools.cli."""

from embcache._tools.cli import main

raise SystemExit(main())
