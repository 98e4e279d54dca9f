"""``python -m embcache``: the ``embcache`` command, defined in embcache.cli.cli."""

from embcache.cli.cli import main

raise SystemExit(main())
