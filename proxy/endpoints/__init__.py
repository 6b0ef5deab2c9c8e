"""One small object per cached API, implementing ``endpoints.base.Endpoint``: how to validate a
request, what its cache key covers, what it may cost, what goes upstream, when an answer is
complete, how a stream folds into a document, where its base64 payloads are, how to replay it and
how to count its usage. Chat completions is the first; the pipeline serves them all.

May import: cache, upstream, obs, keys, storage, config, errors, util (no budget, flight or pipeline).
"""
