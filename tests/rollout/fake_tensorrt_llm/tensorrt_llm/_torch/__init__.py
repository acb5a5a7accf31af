"""Fake of ``tensorrt_llm._torch`` (only ``utils.get_device_uuid``)."""
