"""The response cache: ``ResponseCache`` (lookup, put, purge, and the writes still pending), the entry
format it alone builds and reads (``entry``: template + blobs, ``LCP2``), stream replay by slot
position, the in-process hot tier, which entry a request maps to (namespaces, canonical digest)
and the caller's cache controls. Callers hand it responses and get entries back; they never build
a store key beyond ``entry_key`` nor split a payload.

May import: upstream (SSE framing), obs (usage), keys (a managed key's namespace, the secret
digest), storage, config, errors, util.
"""
