"""The upstream: the one ``ClientSession``, header filtering both ways (hop-by-hop), the relay of a
miss (live to the client, a copy kept, failures mapped; endpoint-agnostic through ``StreamFold``)
and the SSE wire format.

May import: obs (log helpers), errors, config.
"""
