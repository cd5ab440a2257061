"""Cluster spec, transport, preflight and job lifecycle. No textual; may use planner/
(the fit check) and recipes.schema. See docs/architecture.md."""
