"""Experiments built from ordinary training runs: method comparisons (``nemo-red compare``)."""
