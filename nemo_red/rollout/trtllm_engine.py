"""TensorRT-LLM rollout engine (PyTorch backend, Ray orchestrator, RL weight refit).

Status: not verified against a real TensorRT-LLM. This module is written against the
documented 1.x API of TensorRT-LLM release 1.2.0 (the 1.2.0 API pages and module sources on
NVIDIA/TensorRT-LLM gh-pages, commit 7e873e54; ``tensorrt_llm/executor/ray_gpu_worker.py`` at
0acd798d and ``tensorrt_llm/llmapi/rlhf_utils.py`` at 65b31db1) and tested only against a
recording fake (``tests/rollout/fake_tensorrt_llm``). TensorRT-LLM could not be installed where
this was written; run it against the real package before relying on it.

How it maps onto that API:

* ``LLM(model=..., orchestrator_type="ray", ray_worker_extension_cls=<rlhf_utils.WorkerExtension>,
  enable_sleep=True, max_seq_len=...)``: the Ray orchestrator is what provides
  ``LLM._collective_rpc`` (a prototype API), used for refit and sleep.
* Generation from token ids with one ``SamplingParams`` per request: ``end_id=-1`` so only our
  ``stop_token_ids`` end a completion (otherwise the HF EOS ids are added silently),
  ``include_stop_str_in_output=True`` so the stop token stays in ``token_ids`` and ``logprobs=1``
  so each position carries the sampled token's log-prob. Greedy requests with ``n > 1`` are sent
  as ``n`` requests: the 1.2.0 ``SamplingParams`` refuses ``n > 1`` under greedy decoding.
* Log-probs: 1.2.0's PyTorch backend returns log-probs of the raw model distribution (the
  ``logprobs_mode`` switch came later). They equal the sampling distribution's only at
  temperature 1 without top-k/top-p; other settings warn once.
* Refit: ``_collective_rpc("update_weights", ({device_uuid: base64(pickle([(hf_name,
  reduce_tensor(cuda_tensor))]))},))`` bucket by bucket, then ``update_weights(None)`` to finalize.
* Sleep/wake: ``_collective_rpc("sleep"|"wakeup", (tags,))`` with the 1.2.0 memory tags.
"""

from __future__ import annotations

import base64
import json
import pickle
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from nemo_red.rollout.base import (
    Completion,
    FinishReason,
    SamplingParams,
    hf_weights,
    validate_request,
)
from nemo_red.rollout.registry import EngineRequest, register_engine

WORKER_EXTENSION = "tensorrt_llm.llmapi.rlhf_utils.WorkerExtension"
# ExecutorMemoryType values of 1.2.0 (tensorrt_llm/_torch/virtual_memory.py), minus the
# "_no_capture_*" initialisation tags; the same set verl's TRT-LLM rollout releases.
SLEEP_TAGS = (
    "sampler",
    "drafter",
    "guided_decoder",
    "spec_resource_manager",
    "model_extra",
    "executor_extra",
    "model",
    "draft_model",
    "kv_cache",
)
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length"}
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class TRTLLMEngine:
    """Rollout engine on ``tensorrt_llm.LLM`` (PyTorch backend) for Qwen2 HF checkpoints.

    Status: not verified against a real TensorRT-LLM. Written against the documented API of
    TensorRT-LLM 1.2.0 (gh-pages commit 7e873e54) and tested only against a recording fake.

    Args:
        model_dir: HF checkpoint directory (``config.json`` gives ``vocab_size``).
        tensor_parallel_size: GPUs the engine shards the model over.
        dtype: weight dtype passed to ``LLM`` ("bfloat16", "float16", "float32" or "auto").
        max_model_len: context length (prompt + completion), passed as ``max_seq_len``.
        seed: seeds the generator that draws per-request sampling seeds when
            ``SamplingParams.seed`` is None (TensorRT-LLM would otherwise use seed 0 every time).
        refit_devices: local CUDA indices that host the engine's workers; weights are staged on
            each of them for CUDA IPC (default ``range(tensor_parallel_size)``).
        refit_bucket_bytes: at most this many bytes of weights per ``update_weights`` RPC.
        **llm_kwargs: more ``TorchLlmArgs`` fields (``kv_cache_config``, ``max_batch_size``,
            ``enable_sleep=False`` to skip the sleep setup, ...), passed to ``LLM`` unchanged.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        tensor_parallel_size: int = 1,
        dtype: str = "bfloat16",
        max_model_len: int,
        seed: int = 0,
        refit_devices: Sequence[int] | None = None,
        refit_bucket_bytes: int = 512 << 20,
        **llm_kwargs: Any,
    ) -> None:
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {max_model_len}")
        config_path = Path(model_dir) / "config.json"
        self.vocab_size = int(json.loads(config_path.read_text())["vocab_size"])
        self.max_model_len = max_model_len
        self._weight_dtype = _DTYPES.get(dtype)
        self._rng = torch.Generator().manual_seed(seed)
        self._refit_devices = list(refit_devices or range(tensor_parallel_size))
        self._bucket_bytes = refit_bucket_bytes
        self._sleeping = False
        self._warned_raw_logprobs = False
        llm_kwargs.setdefault("orchestrator_type", "ray")
        llm_kwargs.setdefault("ray_worker_extension_cls", WORKER_EXTENSION)
        llm_kwargs.setdefault("enable_sleep", True)
        self._sleep_enabled = bool(llm_kwargs["enable_sleep"])
        try:
            from tensorrt_llm import LLM
        except ImportError as err:
            raise ImportError(
                "TRTLLMEngine needs tensorrt_llm 1.x (written against 1.2.0) with Ray"
            ) from err
        self._llm: Any = LLM(
            model=str(model_dir),
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            max_seq_len=max_model_len,
            **llm_kwargs,
        )

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """``params.n`` completions per prompt, in prompt order (see the module docstring)."""
        llm = self._live()
        tensors = validate_request(prompts, params, self.vocab_size, self.max_model_len)
        self._warn_if_logprobs_differ(params)
        self._ensure_awake()
        copies = params.n if params.greedy else 1
        inputs: list[list[int]] = []
        requests = []
        for i, ids in enumerate(tensors):
            max_tokens = min(params.max_new_tokens, self.max_model_len - ids.numel())
            seed = self._request_seed(params, i)
            for _ in range(copies):
                inputs.append(ids.tolist())
                requests.append(self._sampling_params(params, max_tokens, seed))
        outputs = llm.generate(inputs, sampling_params=requests, use_tqdm=False)
        if len(outputs) != len(inputs):
            raise RuntimeError(f"TensorRT-LLM returned {len(outputs)} results for {len(inputs)}")
        results = []
        for i in range(len(tensors)):
            group = outputs[i * copies : (i + 1) * copies]
            completions = [_completion(out) for request in group for out in request.outputs]
            if len(completions) != params.n:
                raise RuntimeError(f"prompt {i}: {len(completions)} completions, not {params.n}")
            results.append(completions)
        return results

    def update_weights(self, actor: Any) -> None:
        """Refits the engine from an HF state dict or a training actor (``hf_weights``).

        Every HF-named tensor is staged on each of ``refit_devices`` and sent as CUDA IPC
        handles through the worker extension's ``update_weights``, in buckets; a final
        ``update_weights(None)`` finalizes the load. Wakes a sleeping engine first.
        """
        llm = self._live()
        self._ensure_awake()
        from tensorrt_llm._torch.utils import get_device_uuid
        from torch.multiprocessing.reductions import reduce_tensor

        weights = hf_weights(actor)
        devices = [(self._ipc_device(d), get_device_uuid(d)) for d in self._refit_devices]
        for bucket in _buckets(weights, self._bucket_bytes):
            payload, staged = {}, []  # CUDA IPC: the sent tensors must outlive the RPC
            for device, uuid in devices:
                staged.append([(name, self._stage(t, device)) for name, t in bucket])
                handles = [(name, reduce_tensor(t)) for name, t in staged[-1]]
                payload[uuid] = base64.b64encode(pickle.dumps(handles)).decode("ascii")
            llm._collective_rpc("update_weights", args=(payload,))
            del payload, staged
        llm._collective_rpc("update_weights", args=(None,))

    def sleep(self) -> None:
        """Releases weights and KV cache (``sleep`` RPC); a no-op if ``enable_sleep=False``."""
        llm = self._live()
        if self._sleep_enabled and not self._sleeping:
            llm._collective_rpc("sleep", args=(list(SLEEP_TAGS),))
            self._sleeping = True

    def wake(self) -> None:
        """Restores what :meth:`sleep` released (``wakeup`` RPC); a no-op when awake."""
        llm = self._live()
        if self._sleeping:
            llm._collective_rpc("wakeup", args=(list(SLEEP_TAGS),))
            self._sleeping = False

    def shutdown(self) -> None:
        """Shuts the ``LLM`` down; later calls do nothing, other methods raise."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.shutdown()

    def _live(self) -> Any:
        if self._llm is None:
            raise RuntimeError("TRTLLMEngine was shut down")
        return self._llm

    def _ensure_awake(self) -> None:
        if self._sleeping:
            self.wake()

    def _ipc_device(self, index: int) -> torch.device:
        """Where weights are staged for the worker on local CUDA device ``index``."""
        return torch.device("cuda", index)

    def _stage(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        dtype = self._weight_dtype if tensor.is_floating_point() else None
        return tensor.detach().to(device=device, dtype=dtype or tensor.dtype).contiguous()

    def _request_seed(self, params: SamplingParams, index: int) -> int:
        if params.seed is not None:
            return params.seed + index
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self._rng))

    def _sampling_params(self, params: SamplingParams, max_tokens: int, seed: int) -> Any:
        from tensorrt_llm.llmapi import SamplingParams as TRTSamplingParams

        common: dict[str, Any] = {
            "max_tokens": max_tokens,
            "end_id": -1,
            "stop_token_ids": list(params.stop_token_ids) or None,
            "include_stop_str_in_output": True,
            "logprobs": 1,
            "detokenize": False,
        }
        if params.greedy:
            return TRTSamplingParams(n=1, temperature=0.0, **common)
        return TRTSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=seed,
            **common,
        )

    def _warn_if_logprobs_differ(self, params: SamplingParams) -> None:
        plain = params.temperature == 1.0 and params.top_p == 1.0 and params.top_k == 0
        if params.greedy or plain or self._warned_raw_logprobs:
            return
        self._warned_raw_logprobs = True
        warnings.warn(
            "TensorRT-LLM 1.2 returns raw-model log-probs; with temperature != 1 or top-k/top-p "
            "they differ from the sampling distribution's",
            stacklevel=3,
        )


def _buckets(
    weights: Mapping[str, torch.Tensor], max_bytes: int
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Groups ``weights`` in order into lists of at most ``max_bytes`` (one tensor if larger)."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in weights.items():
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def _token_logprob(entry: Any, token: int) -> float:
    """The sampled token's log-prob from one ``CompletionOutput.logprobs`` position."""
    if isinstance(entry, Mapping):
        if token not in entry:
            raise RuntimeError(f"TensorRT-LLM returned no log-prob for sampled token {token}")
        return float(entry[token].logprob)
    return float(entry)


def _completion(out: Any) -> Completion:
    """Converts a ``CompletionOutput`` (token_ids, logprobs, finish_reason)."""
    ids = [int(t) for t in out.token_ids]
    logprobs = out.logprobs or []
    if len(logprobs) != len(ids):
        raise RuntimeError(f"{len(logprobs)} log-probs for {len(ids)} generated tokens")
    reason = _FINISH.get(out.finish_reason)
    if reason is None:
        raise RuntimeError(f"unexpected TensorRT-LLM finish_reason {out.finish_reason!r}")
    values = [_token_logprob(entry, tok) for entry, tok in zip(logprobs, ids, strict=True)]
    return Completion(
        token_ids=torch.tensor(ids, dtype=torch.long),
        logprobs=torch.tensor(values, dtype=torch.float32),
        finish_reason=reason,
    )


@register_engine("trtllm", starts_from_hf_dir=True, holds_memory=True)
def _build(request: EngineRequest) -> TRTLLMEngine:
    """TensorRT-LLM on ``request.hf_dir`` (not verified against a real TensorRT-LLM; see
    the module docstring)."""
    assert request.hf_dir is not None  # checked by registry.build_engine
    return TRTLLMEngine(
        request.hf_dir,
        tensor_parallel_size=request.tensor_parallel_size,
        dtype=request.dtype,
        max_model_len=request.max_model_len,
        seed=request.seed,
    )
