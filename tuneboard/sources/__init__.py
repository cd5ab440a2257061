"""Where the dashboard's data comes from, as typed immutable snapshots.

Every source (local NVML sampler, fake NVML cluster, job-directory tailer, remote agent
stream, recorded replay) implements `tuneboard.sources.base.Source`: `poll()` returns the
snapshots (tuneboard/sources/snapshots.py) seen since the last poll. A `Poller` thread
calls it, never on the UI thread, and never twice at once. Nothing here imports textual.
"""
