"""The command line: ``serve`` (and its workers), ``demo``, ``keys``."""
