"""What happened and what it cost: Prometheus metrics with bounded labels, the accountant (a call's
cost, a hit's savings), prices (one model's price, the built-in table, precedence, the upstream's
list), ``Usage`` and ``Demand`` (the inputs of a price), ``Health`` (readiness and the degraded
gauge) and log helpers (``clip``, JSON lines).

May import: keys (the secret digest, for a label), config, util.
"""
