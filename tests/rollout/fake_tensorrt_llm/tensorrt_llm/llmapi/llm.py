"""Fake of ``tensorrt_llm.llmapi.llm.LLM`` (PyTorch backend, Ray orchestrator) as of 1.2.0.

Signatures follow 1.2.0's ``LLM.__init__``, ``generate``, ``_collective_rpc`` and ``shutdown``
and ``RayGPUWorker.sleep``/``wakeup``; checks follow theirs where the engine depends on them:
unknown constructor keywords are a ValueError (1.2.0 checks them against ``TorchLlmArgs``),
collective RPC needs ``orchestrator_type="ray"``, the worker extension is resolved by
qualified name and mixed into the workers, sleep needs ``enable_sleep=True``, memory tags must
be ``ExecutorMemoryType`` values, a stop token is cut from ``token_ids`` (not from
``logprobs``) unless ``include_stop_str_in_output``. Every call is appended to ``LLM.calls``.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tensorrt_llm.sampling_params import SamplingParams

# A subset of the 1.2.0 TorchLlmArgs fields (tensorrt_llm/llmapi/llm_args.py), plus "backend".
TORCH_LLM_ARGS = frozenset(
    {
        "backend",
        "orchestrator_type",
        "ray_worker_extension_cls",
        "ray_placement_config",
        "enable_sleep",
        "max_seq_len",
        "max_batch_size",
        "max_num_tokens",
        "max_beam_width",
        "kv_cache_config",
        "cuda_graph_config",
        "pipeline_parallel_size",
        "context_parallel_size",
        "gpus_per_node",
        "enable_attention_dp",
        "model_kwargs",
        "load_format",
        "enable_chunked_prefill",
        "disable_overlap_scheduler",
        "attn_backend",
        "sampler_type",
        "allreduce_strategy",
        "stream_interval",
        "enable_autotuner",
        "torch_compile_config",
        "batch_wait_timeout_ms",
        "batch_wait_timeout_iters",
        "batch_wait_max_tokens_ratio",
        "checkpoint_format",
        "checkpoint_loader",
        "gather_generation_logits",
        "return_perf_metrics",
        "num_postprocess_workers",
        "disable_flashinfer_sampling",
        "print_iter_log",
        "moe_config",
        "lora_config",
        "enable_lora",
        "peft_cache_config",
        "guided_decoding_backend",
    }
)
# ExecutorMemoryType values (tensorrt_llm/_torch/virtual_memory.py, 1.2.0 era).
MEMORY_TAGS = frozenset(
    {
        "sampler",
        "drafter",
        "guided_decoder",
        "spec_resource_manager",
        "_no_capture_init_kv_cache",
        "_no_capture_init_extra_resources",
        "model_extra",
        "executor_extra",
        "kv_cache",
        "model",
        "draft_model",
    }
)


@dataclass(slots=True)
class Logprob:
    """Log-prob and vocabulary rank of one token."""

    logprob: float
    rank: int | None = None


@dataclass(slots=True)
class CompletionOutput:
    """One completion of a request (fields of 1.2.0's ``CompletionOutput``)."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] | list[float] = field(default_factory=list)
    prompt_logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    generation_logits: Any = None
    additional_context_outputs: Any = None
    additional_generation_outputs: Any = None
    disaggregated_params: Any = None
    request_perf_metrics: Any = None


@dataclass
class RequestOutput:
    """The result of one request."""

    request_id: int
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt: str | None = None
    finished: bool = True


def _check_tags(tags: list[str]) -> list[str]:
    unknown = [t for t in tags if t not in MEMORY_TAGS]
    if unknown:
        raise ValueError(
            f"Unknown memory tag '{unknown[0]}'. Valid tags are: {sorted(MEMORY_TAGS)}"
        )
    return list(tags)


class RayGPUWorker:
    """One rank's worker: sleep/wakeup as in 1.2.0's ``RayGPUWorker``."""

    def __init__(self, device_id: int, enable_sleep: bool) -> None:
        self.device_id = device_id
        self.enable_sleep = enable_sleep
        self.released: set[str] = set()
        self.loaded: dict[str, Any] = {}
        self.refits: list[list[str] | None] = []

    def sleep(self, sleep_tags: list[str]) -> None:
        if not self.enable_sleep:
            raise ValueError("Sleep feature is not enabled, please set enable_sleep=True")
        self.released |= set(_check_tags(sleep_tags))

    def wakeup(self, wakeup_tags: list[str]) -> None:
        if not self.enable_sleep:
            raise ValueError("Sleep feature is not enabled, please set enable_sleep=True")
        self.released -= set(_check_tags(wakeup_tags))


def _inject_worker_extension(worker_class: type, qualname: str | None) -> type:
    """As 1.2.0's ``RayWorkerWrapper._inject_worker_extension``."""
    if not qualname:
        return worker_class
    module_name, obj_name = qualname.rsplit(".", 1)
    try:
        extension = getattr(importlib.import_module(module_name), obj_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise RuntimeError(f"Failed to load worker extension '{qualname}'") from err
    for attr in dir(extension):
        if not attr.startswith("__") and hasattr(worker_class, attr):
            raise ValueError(f"Worker class already defines '{attr}'")
    return type(f"{worker_class.__name__}With{extension.__name__}", (worker_class, extension), {})


class LLM:
    """Recording fake of ``tensorrt_llm.LLM``."""

    instances: ClassVar[list[LLM]] = []

    def __init__(
        self,
        model: str | Path,
        tokenizer: Any = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        invalid = sorted(set(kwargs) - TORCH_LLM_ARGS)
        if invalid:
            raise ValueError(f"LLM got invalid argument: {invalid[0]}")
        self.init_args: dict[str, Any] = {
            "model": model,
            "tokenizer": tokenizer,
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            **kwargs,
        }
        self.calls: list[tuple[str, dict[str, Any]]] = [("__init__", dict(self.init_args))]
        config = json.loads((Path(model) / "config.json").read_text())
        self.vocab_size: int = config["vocab_size"]
        self.eos_token_id: int | None = config.get("eos_token_id")
        self.workers: list[Any] = []
        if kwargs.get("orchestrator_type") == "ray":
            qualname = kwargs.get("ray_worker_extension_cls")
            worker_cls = _inject_worker_extension(RayGPUWorker, qualname)
            sleep = bool(kwargs.get("enable_sleep", False))
            self.workers = [worker_cls(rank, sleep) for rank in range(tensor_parallel_size)]
        self._is_shutdown = False
        self._next_id = 0
        LLM.instances.append(self)

    def generate(
        self,
        inputs: Any,
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora_request: Any = None,
        prompt_adapter_request: Any = None,
        kv_cache_retention_config: Any = None,
        disaggregated_params: Any = None,
        scheduling_params: Any = None,
        cache_salt: str | list[str] | None = None,
    ) -> RequestOutput | list[RequestOutput]:
        """Runs the toy model on token-id prompts (no tokenizer in the fake)."""
        if self._is_shutdown:
            raise RuntimeError("LLM is shutting down")
        unbatched = not isinstance(inputs, list) or (bool(inputs) and isinstance(inputs[0], int))
        batch = [inputs] if unbatched else inputs
        self.calls.append(
            ("generate", {"inputs": [list(p) for p in batch], "sampling_params": sampling_params})
        )
        if any("model" in w.released for w in self.workers):
            raise RuntimeError("fake: generate() while the model memory is released")
        results = []
        for i, prompt in enumerate(batch):
            if not isinstance(prompt, list) or not all(isinstance(t, int) for t in prompt):
                raise TypeError(f"the fake takes token-id lists, got {type(prompt)}")
            sp = sampling_params[i] if isinstance(sampling_params, list) else sampling_params
            sp = self._prepare(sp)
            outputs = [self._sequence(prompt, sp, j) for j in range(sp.n)]
            results.append(RequestOutput(self._next_id, list(prompt), outputs))
            self._next_id += 1
        return results[0] if unbatched else results

    def _prepare(self, sp: SamplingParams | None) -> SamplingParams:
        sp = SamplingParams() if sp is None else sp
        if sp.end_id is None:  # 1.2.0 then takes the tokenizer's EOS as end_id
            sp.end_id = sp.pad_id = self.eos_token_id
        return sp

    def _sequence(self, prompt: list[int], sp: SamplingParams, index: int) -> CompletionOutput:
        out = CompletionOutput(index=index, finish_reason="length")
        stops = set(sp.stop_token_ids or ())
        last = prompt[-1]
        for step in range(sp.max_tokens):
            token = (last + 1 + (index if step == 0 else 0)) % self.vocab_size
            last = token
            if token == sp.end_id:  # the end token is not part of the output
                out.finish_reason = "stop"
                break
            out.token_ids.append(token)
            if sp.logprobs:
                entry = {token: Logprob(-0.5 - 0.25 * index, rank=1 if index == 0 else 2)}
                if index:
                    entry[(token + 1) % self.vocab_size] = Logprob(-0.1, rank=1)
                out.logprobs.append(entry)
            if token in stops:
                out.finish_reason, out.stop_reason = "stop", token
                if not sp.include_stop_str_in_output:
                    out.token_ids.pop()
                break
        return out

    def _collective_rpc(
        self,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict | None = None,
        non_block: bool = False,
        unique_reply_rank: int | None = None,
    ) -> list[Any]:
        """Calls ``method`` on every worker (Ray orchestrator only, as in 1.2.0)."""
        record = {"method": method, "args": args, "kwargs": kwargs, "non_block": non_block}
        self.calls.append(("_collective_rpc", record))
        if not self.workers:
            raise ValueError("Executor type GenerationExecutor does not support collective RPC.")
        results = []
        for worker in self.workers:
            if not callable(getattr(worker, method, None)):
                raise AttributeError(f"The RayGPUWorker has no method called '{method}'.")
            results.append(getattr(worker, method)(*args, **(kwargs or {})))
        return results

    def shutdown(self) -> None:
        self.calls.append(("shutdown", {}))
        self._is_shutdown = True
