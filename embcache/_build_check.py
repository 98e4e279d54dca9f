"""Imported first by embcache/__init__.py: when the compiled core is missing,
fail with an ImportError that says why and what to run, instead of a bare
``No module named 'embcache._core'`` deep inside another module.

The usual cause is running from the root of a clone (``python -m embcache`` or
``python -m pytest`` put the current folder first on sys.path, so Python imports
the source tree, which holds ``_core.pyx`` but no compiled ``_core`` unless it
was built in place)."""

from __future__ import annotations

import importlib.util
import os

__all__: list[str] = []

_HERE = os.path.dirname(os.path.abspath(__file__))

if importlib.util.find_spec("embcache._core") is None:
    if os.path.exists(os.path.join(_HERE, "_core.pyx")):
        raise ImportError(
            f"embcache._core is not built: {_HERE} is embcache's source tree, imported "
            "because the current folder comes first on sys.path. Run from outside the "
            "source tree to use the installed embcache (pip install .), or build it in "
            "place: pip install -e . (or: pip install Cython numpy setuptools && "
            "python setup.py build_ext --inplace)"
        )
    raise ImportError(
        f"embcache._core is missing from {_HERE}: the installation is incomplete; "
        "reinstall embcache"
    )
