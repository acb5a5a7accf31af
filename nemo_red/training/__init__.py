"""Training: sequence packing, the megatron-core actor, optimisation and checkpoints."""
