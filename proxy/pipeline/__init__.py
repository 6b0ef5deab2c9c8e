"""The one flow every cached endpoint goes through: parse → authorise → admit → lookup → join or
lead the flight → forward → store → account → settle. What differs per API is an ``Endpoint``
(``proxy.endpoints``); the flow is written once, here.

May import: endpoints, cache, flight, upstream, keys, obs, storage, state, config, errors, util.
Budget code is only named for the type checker: the app factory hands the budget guard in.
"""
