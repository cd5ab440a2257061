"""The Textual dashboard. `state`, `alerts` and `format` are plain Python (no textual), the
screens and the app import textual; only `tuneboard dashboard` imports this package's UI.
"""
