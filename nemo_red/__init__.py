"""nemo_red: RED (Recall-Extend Dynamics) post-training for math reasoning on megatron-core."""

__version__ = "0.1.0.dev0"
