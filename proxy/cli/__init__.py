"""The command line: ``serve`` (one worker, or N spawned on one port with shared metrics),
``demo`` (the proxy in front of ``proxy.sim``), ``keys`` (a client of the admin API). The
environment comes in from ``proxy.__main__``.

May import: everything (it is the top).
"""
