"""The core: what ``embcache/_core.pyx`` compiles into the ``embcache._core``
extension (the Cython includes, ``*.pxi``, and C headers, ``*.h``, of this folder;
``snapshot/`` holds the snapshot file's), and the plain Python type the core
returns (``info.CacheInfo``). The lowest layer: nothing here imports from
embcache's other packages.
"""
