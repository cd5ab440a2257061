"""A job's life: launch phases (launch.py), torchrun per node (torchrun.py), files to the
nodes (sync.py), the supervisor that watches and stops (supervisor.py, node_watch.py,
node_process.py, log_follower.py), the job directory (store.py, log_mirror.py), the
first failure (root_cause.py), and `stop/status/resume` (control.py, reconnect.py)."""
