"""Models: dense decoder families on megatron-core, HF <-> megatron conversion, CPU
compatibility."""
