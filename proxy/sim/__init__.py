"""The simulated upstream: an LLMGateway-shaped server (text and image models, deterministic PNGs,
realistic usage and latency, a priced model list) for ``demo``, the tests and the bench.

A separate program: it imports nothing of the proxy.
"""
