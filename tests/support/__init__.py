"""Helpers shared by the tests and the benchmarks: a real sshd cluster on loopback
(sshd.py), model and cluster specs (specs.py), the real training step the planner is
measured against (real_step.py, real_step_model.py), job directories (jobs.py), Pilot
helpers (pilot.py) and the project's import graph (import_graph.py).

Tests and benchmarks import from here; no test imports a benchmark or another test.
"""
