"""Small helpers any package may use: the one byte-bounded LRU, the bounded memo, background
task sets.

Imports nothing of ours.
"""
