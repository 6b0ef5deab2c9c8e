"""Single flight: identical concurrent misses make one upstream call, in one process (futures) and
across replicas (a Redis lock with heartbeat, outcomes on pub/sub). It owns flights and their
announcements only; the stores a flight waits for are the cache's pending writes.

May import: cache (the entry a flight ends with), storage, util.
"""
