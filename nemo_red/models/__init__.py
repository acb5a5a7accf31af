"""Models: Qwen2 / Qwen2.5 on megatron-core, HF <-> megatron conversion, CPU compatibility."""
