"""Rollout engines behind one protocol (``base.RolloutEngine``), one module per backend."""
