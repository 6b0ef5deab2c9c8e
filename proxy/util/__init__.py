"""Small helpers any package may use: the one byte-bounded LRU, background task sets.

Imports nothing of ours.
"""
