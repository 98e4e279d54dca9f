"""Code only the asv suites and tools/ use, kept out of the installed package:
hit-rate traces (hitrate.py) and the put/get adapter over a peer cache (peers.py).
The timed loops shared with ``embcache check --compare`` stay in embcache.cli.peers."""
