"""Single flight: identical concurrent misses make one upstream call, in one process and across replicas."""
