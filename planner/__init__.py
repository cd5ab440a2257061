"""tuneboard's planner: model and cluster specs -> memory and time estimates -> a plan.

Pure Python. Importing this package never imports torch, transformers or textual
(tests/unit/test_import_light.py holds that line): `tuneboard plan` must start
in a fraction of a second.
"""
