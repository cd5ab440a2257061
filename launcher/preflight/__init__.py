"""Before anything starts: the checks on every node (checks.py), the stdlib-only probe
each node runs (node_probe.py), the rendezvous listener test (rendezvous.py) and the
planner's fit check for the recipe on the GPUs found (fit.py)."""
