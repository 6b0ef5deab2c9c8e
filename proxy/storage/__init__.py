"""Byte stores (memory, Redis, Redis Cluster) and the one vocabulary for store outages."""
