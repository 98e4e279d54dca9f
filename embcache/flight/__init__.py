"""Single flight behind ``get_or_compute``: one registry per cache, made by the
cache on first use (``registry.Flights``: the calls, each written once as a
generator of steps), the registry's state, claiming and settling (``claims``),
the blocking and asyncio drivers of those steps (``drive``), the bookkeeping of
one call (``call``), waiting (``wait``), deadlines and model threads
(``deadline``), and the timeout rules (``timeouts``). A layer below the core: it
imports nothing of ``embcache._core`` at run time and works on a cache through
its public methods.
"""
