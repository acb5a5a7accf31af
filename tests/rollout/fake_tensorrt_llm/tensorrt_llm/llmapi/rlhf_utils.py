"""Fake of ``tensorrt_llm.llmapi.rlhf_utils`` (``WorkerExtension``), 1.2.0 era.

``update_weights(ipc_handles)`` takes ``{device_uuid: [(name, (rebuild_fn, args)), ...]}`` or
the same list base64-pickled, for the worker's own device UUID, and rebuilds each tensor as the
real one does (``args[6]`` is the target device of a CUDA IPC handle; the CPU handles of the
tests have three arguments); ``update_weights(None)`` finalizes the refit.
"""

from __future__ import annotations

import base64
import pickle
from typing import Any

from tensorrt_llm._torch.utils import get_device_uuid


class WorkerExtension:
    """Mixed into each fake ``RayGPUWorker`` when named by ``ray_worker_extension_cls``."""

    device_id: int
    released: set[str]
    loaded: dict[str, Any]
    refits: list[list[str] | None]

    def update_weights(self, ipc_handles: dict | None = None) -> None:
        if "model" in self.released:
            raise RuntimeError("fake: update_weights() while the model memory is released")
        if ipc_handles is None:
            self.refits.append(None)  # finalize
            return
        device_uuid = get_device_uuid(self.device_id)
        if device_uuid not in ipc_handles:
            raise ValueError(f"Device UUID {device_uuid} not found in ipc_handles")
        handles = ipc_handles[device_uuid]
        if isinstance(handles, str):
            handles = pickle.loads(base64.b64decode(handles))
        if not isinstance(handles, list):
            raise ValueError(f"Deserialized data must be a list, got {type(handles).__name__}")
        names = []
        for name, (rebuild, args) in handles:
            args = list(args)
            if len(args) > 6:
                args[6] = self.device_id
            self.loaded[name] = rebuild(*args)
            names.append(name)
        self.refits.append(names)

    def reset_prefix_cache(self) -> None:
        """No KV cache in the fake."""

    def check_weights_updated(self) -> bool:
        return all(bool((t == 0).all()) for t in self.loaded.values())
