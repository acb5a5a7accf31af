"""Fake of ``tensorrt_llm._torch.utils``: device UUIDs without NVML."""


def get_device_uuid(device_idx: int) -> str:
    """A stable fake UUID for local CUDA device ``device_idx`` (the real one asks NVML)."""
    return f"GPU-fake-{device_idx}"
