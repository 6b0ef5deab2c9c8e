"""The response cache: entry format, lookup/put/purge, hot tier, cache keys and namespaces."""
