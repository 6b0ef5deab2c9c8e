"""The benchmark: proxy vs. a simulated upstream on loopback, load from wrk or an aiohttp client.

Run ``python -m bench`` (full matrix, writes bench/RESULTS.md) or ``python -m bench --quick``.
"""
