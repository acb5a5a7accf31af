"""Memory per GPU of a RED run: the actor's state, its activations and the rollout engine.

The actor's state follows megatron's ``DistributedDataParallel`` and ``DistributedOptimizer``
as ``nemo_red.training.optim`` builds them: weights in the training dtype, gradients in a
contiguous fp32 buffer (``grad_reduce_in_fp32``), and fp32 main weights plus Adam's two
moments sharded over the data-parallel ranks; bytes per parameter ``6 + 12 / d`` in bf16
(``18`` without the distributed optimizer) and ``8 + 8 / d`` in fp32 (there the main weights
are the model's own), Megatron-LM's published figures. Activations are counted tensor by
tensor (``activations.py``); the logits of a micro-batch are kept for the fused log-prob /
entropy pass and their gradient is made in the backward pass.

Phases, each a peak on the worst pipeline stage:

* ``rollout``: actor state + the engine (its weights and KV cache);
* ``logprobs``: actor state + one micro-batch's logits (forward only);
* ``training``: actor state + activations of the micro-batches in flight + the larger of
  the logits with their gradient and (full recomputation) one recomputed chunk's
  activations (+ the engine, unless it sleeps while the actor trains);
* ``optimizer``: actor state + the optimizer step's scratch (+ the engine, unless asleep).

A plan fits when the largest phase plus ``reserve_bytes`` (CUDA context, NCCL buffers,
allocator fragmentation) is at most the GPU's memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nemo_red.planning.activations import (
    LOCAL_SDPA,
    RECOMPUTE,
    RECOMPUTE_METHODS,
    Recipe,
    final_bytes,
    stage_activation_bytes,
)
from nemo_red.planning.model_dims import ModelDims

__all__ = [
    "GPUS",
    "EngineSetup",
    "Layout",
    "MemoryPlan",
    "Workload",
    "plan_memory",
    "state_bytes_per_parameter",
]

GiB = 2**30
# Device memory as the driver reports it (nvidia-smi's MiB) for the 80 GB H100 and 141 GB H200
GPUS: dict[str, int] = {"h100": 81559 * 2**20, "h200": 143771 * 2**20}
DTYPE_BYTES = {"bf16": 2, "fp32": 4}
# Rows of logits per chunk of the fused log-prob / entropy kernels (elements per chunk).
_TOKEN_STATS_CHUNK = 1 << 24


@dataclass(frozen=True)
class Layout:
    """How the actor is split (``dp`` = GPUs / (tp * pp))."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    vpp: int = 1
    sequence_parallel: bool = False
    recompute: str = "none"
    recompute_method: str = "uniform"
    recompute_num_layers: int = 1
    distributed_optimizer: bool = True

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "dp", "vpp", "recompute_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sequence_parallel and self.tp == 1:
            raise ValueError("sequence parallelism needs tp > 1")
        if self.vpp > 1 and self.pp == 1:
            raise ValueError("virtual pipeline stages (vpp > 1) need pp > 1")
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"recompute must be one of {RECOMPUTE}, got {self.recompute!r}")
        if self.recompute_method not in RECOMPUTE_METHODS:
            raise ValueError(f"recompute_method must be one of {RECOMPUTE_METHODS}")

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def describe(self) -> str:
        """``TP2 PP1 DP4 SP selective`` style summary."""
        parts = [f"TP{self.tp}", f"PP{self.pp}"]
        parts += [f"VPP{self.vpp}"] if self.vpp > 1 else []
        parts += [f"DP{self.dp}"] + (["SP"] if self.sequence_parallel else [])
        if self.recompute == "full":
            parts.append(f"full-{self.recompute_method}-{self.recompute_num_layers}")
        elif self.recompute == "selective":
            parts.append("selective")
        return " ".join(parts)


@dataclass(frozen=True)
class Workload:
    """What one training step processes.

    Attributes:
        prompt_length, response_length: tokens of the longest prompt and response.
        token_budget: tokens per packed micro-batch (default: one whole sequence).
        dtype: training dtype (``bf16`` | ``fp32``; gradients and main weights are fp32).
        device: ``cuda`` | ``cpu``: the optimizer step's scratch (AdamW's foreach kernels on
            CUDA keep one fp32 copy of the local shard; the per-tensor loop on CPU one of
            the largest tensor).
        fused_adam: megatron steps with a fused Adam (Transformer Engine's or apex's, as in
            the NGC image): no scratch copy of the shard. Without them it falls back to
            torch's AdamW.
        entropy_grad: the loss differentiates the entropy (one more fp32 logits chunk).
        micro_batches: micro-batches per step on a data-parallel rank (None: enough to
            fill the pipeline's warm-up; fewer cap the activations in flight).
    """

    prompt_length: int = 1024
    response_length: int = 8192
    token_budget: int | None = None
    dtype: str = "bf16"
    device: str = "cuda"
    fused_adam: bool = False
    entropy_grad: bool = False
    micro_batches: int | None = None

    def __post_init__(self) -> None:
        if self.prompt_length < 1 or self.response_length < 1:
            raise ValueError("prompt_length and response_length must be >= 1")
        if self.token_budget is not None and self.token_budget < 1:
            raise ValueError(f"token_budget must be >= 1, got {self.token_budget}")
        if self.micro_batches is not None and self.micro_batches < 1:
            raise ValueError(f"micro_batches must be >= 1, got {self.micro_batches}")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {self.dtype!r}")
        if self.device not in ("cuda", "cpu"):
            raise ValueError(f"device must be cuda or cpu, got {self.device!r}")

    @property
    def sequence_length(self) -> int:
        return self.prompt_length + self.response_length

    @property
    def tokens(self) -> int:
        """Tokens of one micro-batch."""
        return self.token_budget or self.sequence_length


@dataclass(frozen=True)
class EngineSetup:
    """The rollout engine's share of a GPU.

    Attributes:
        name: a registered engine (``rollout.engine``).
        memory_fraction: vLLM's ``gpu_memory_utilization`` (of the GPU's memory; default
            0.5, the engine's default here) or TensorRT-LLM's ``free_gpu_memory_fraction``
            (of the memory free after the weights; default 0.9); unused by native / hf.
        batch_size: sequences decoded together (``rollout.max_batch_size``; native, hf).
        tensor_parallel_size: the engine's own TP (its weights and KV heads are split that
            many ways); None: the actor's TP.
        sleep_while_training: ``rollout.sleep_while_training`` (engines that hold memory).
    """

    name: str = "vllm"
    memory_fraction: float | None = None
    batch_size: int = 64
    tensor_parallel_size: int | None = None
    sleep_while_training: bool = True

    def __post_init__(self) -> None:
        if self.memory_fraction is not None and not 0 < self.memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], got {self.memory_fraction}")
        if self.batch_size < 1 or (self.tensor_parallel_size or 1) < 1:
            raise ValueError("engine batch_size and tensor_parallel_size must be >= 1")


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU on the worst pipeline stage (see the module docstring)."""

    model: str
    layout: Layout
    workload: Workload
    engine: EngineSetup
    gpu_bytes: int
    reserve_bytes: int
    stage: str
    parameters_per_gpu: int
    weights: float
    gradients: float
    main_weights: float
    optimizer_states: float
    activations: float
    recompute_working: float
    logits: float
    optimizer_scratch: float
    engine_weights: float
    kv_cache: float
    kv_cache_tokens: int
    engine_awake_while_training: bool
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def state(self) -> float:
        """Weights, gradients, main weights and Adam moments."""
        return self.weights + self.gradients + self.main_weights + self.optimizer_states

    @property
    def peak(self) -> float:
        return max(self.phases.values())

    @property
    def fits(self) -> bool:
        return self.peak + self.reserve_bytes <= self.gpu_bytes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes as integers)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = int(value)
        out["phases"] = {k: int(v) for k, v in self.phases.items()}
        out.update(
            state=int(self.state),
            peak=int(self.peak),
            fits=self.fits,
            describe=self.layout.describe(),
        )
        return out


def state_bytes_per_parameter(dtype: str, dp: int, distributed_optimizer: bool = True) -> float:
    """Weights + fp32 gradients + main weights + Adam moments per parameter (Megatron-LM's
    table: bf16 ``6 + 12 / d``, fp32 ``8 + 8 / d``; ``d = 1`` without the distributed
    optimizer: 18 and 16)."""
    weight = DTYPE_BYTES[dtype]
    shard = dp if distributed_optimizer else 1
    main = 4 if dtype != "fp32" else 0
    return weight + 4 + (main + 8) / shard


def _stage_parameters(dims: ModelDims, layout: Layout, stage: str) -> tuple[int, int]:
    """``(parameters, largest tensor)`` on one GPU of the first or last pipeline stage."""
    layers = dims.layers // layout.pp
    params = layers * dims.layer_parameters(layout.tp)
    vocab_matrix = dims.embedding_parameters(layout.tp)
    first, last = stage in ("first", "only"), stage in ("last", "only")
    if first:
        params += vocab_matrix
    if last:
        params += dims.hidden  # final norm
        if not (dims.tied_embeddings and first):  # tied at PP=1: one matrix serves both
            params += vocab_matrix
    qkv = dims.hidden * (dims.heads + 2 * dims.kv_heads) * dims.head_dim
    layer_largest = max(qkv, 2 * dims.hidden * dims.ffn) // layout.tp  # fused QKV, fc1
    largest = max(vocab_matrix if (first or last) else 0, layer_largest)
    return params, largest


def _logits_bytes(dims: ModelDims, layout: Layout, workload: Workload) -> tuple[float, float]:
    """``(training, forward-only)`` peak bytes of one micro-batch's logits on a last-stage
    rank, the largest of: the logits with the fused log-prob / entropy kernel's two fp32
    chunk buffers (forward); the logits, their gradient and the backward's chunk buffers
    (one for low-precision logits, one more for an entropy gradient); the gradient with the
    output weight's gradient and the hidden states' gradient (the output layer's backward)."""
    act = DTYPE_BYTES[workload.dtype]
    tokens, shard = workload.tokens, -(-dims.vocab // layout.tp)
    logits = tokens * shard * act
    chunk = min(tokens, max(1, _TOKEN_STATS_CHUNK // shard)) * shard * 4
    forward = logits + 2 * chunk
    backward = 2 * logits + chunk * (int(workload.entropy_grad) + int(act != 4))
    output_backward = logits + (shard + tokens) * dims.hidden * act
    return max(forward, backward, output_backward), forward


def _in_flight(layout: Layout, workload: Workload, stage: str) -> float:
    """Micro-batches' worth of a stage's layers whose activations the stage keeps at once.

    megatron's 1F1B runs ``pp - r - 1`` warm-up forwards on rank ``r`` before its first
    backward: ``pp`` micro-batches in flight on the first stage, 1 on the last. Interleaved
    (``vpp`` chunks of ``layers / (pp vpp)`` each) it runs ``2 (pp - r - 1) + (vpp - 1) pp``
    warm-up chunks: ``(2 (pp - 1) + (vpp - 1) pp + 1) / vpp`` stages' worth on the first,
    ``1 + (pp - 1) / (pp vpp)`` times Korthikanti et al.'s ``pp``.
    """
    pp, vpp = layout.pp, layout.vpp
    rank = pp - 1 if stage == "last" else 0
    micro = workload.micro_batches or 2**31  # None: enough micro-batches to fill the warm-up
    if vpp == 1:
        return float(min(pp - rank, micro))
    chunks = 2 * (pp - rank - 1) + (vpp - 1) * pp + 1
    return min(chunks, micro * vpp) / vpp


def _engine_bytes(
    dims: ModelDims,
    engine: EngineSetup,
    gpu_bytes: int,
    actor_state: float,
    workload: Workload,
    actor_tp: int,
) -> tuple[float, float, float, bool]:
    """``(engine weights, KV cache, KV bytes per token, awake while training)`` on one GPU.

    vLLM and TensorRT-LLM hold bf16 weights split over their own TP; native decodes with
    the actor's own (TP-split) model in the training dtype; hf holds a whole bf16 copy."""
    from nemo_red.rollout.registry import engine_info

    info = engine_info(engine.name)  # an unknown name lists the registered engines
    engine_tp = engine.tensor_parallel_size or actor_tp
    if engine.name == "native":
        engine_tp = actor_tp
    if engine.name == "hf":
        engine_tp = 1
    weights = 0.0 if info.follows_policy else 2 * dims.total_parameters() / engine_tp
    kv_dtype = DTYPE_BYTES[workload.dtype] if engine.name == "native" else 2
    per_token = dims.kv_bytes_per_token(kv_dtype) / engine_tp
    if engine.name == "vllm":
        kv = (engine.memory_fraction or 0.5) * gpu_bytes - weights
    elif engine.name == "trtllm":
        free = gpu_bytes - actor_state - weights
        kv = (engine.memory_fraction or 0.9) * max(free, 0.0)
    elif engine.name in ("native", "hf"):  # a static / dynamic cache of the whole batch
        kv = engine.batch_size * workload.sequence_length * per_token
    else:
        raise ValueError(
            f"the planner knows the memory of the engines vllm, trtllm, native and hf, not "
            f"{engine.name!r}"
        )
    awake = not (info.holds_memory and engine.sleep_while_training)
    if engine.name == "native":
        awake = False  # its cache lives only while generating
    return weights, kv, per_token, awake


def plan_memory(
    dims: ModelDims,
    layout: Layout,
    workload: Workload,
    engine: EngineSetup,
    gpu_bytes: int,
    reserve_bytes: int = 3 * GiB,
    recipe: Recipe = LOCAL_SDPA,
    stage: str | None = None,
) -> MemoryPlan:
    """The memory plan of ``layout`` on GPUs of ``gpu_bytes``: of its worst pipeline stage,
    or of ``stage`` (``first`` | ``last``; ``only`` at PP = 1).

    Raises:
        ValueError: when the layout cannot split the model (heads, KV heads, MLP width or
            layers not divisible), or an engine that cannot run under it.
    """
    _check_split(dims, layout)
    if engine.name == "native" and layout.pp > 1:
        raise ValueError("the native engine does not run under pipeline parallelism (pp > 1)")
    if engine.name == "native" and layout.sequence_parallel:
        raise ValueError(
            "the native engine does not run under sequence parallelism (it decodes through "
            "the actor's model one token at a time); training refuses the same layout"
        )
    act = DTYPE_BYTES[workload.dtype]
    stages = ["only"] if layout.pp == 1 else ["first", "last"]
    if stage is not None:
        if stage not in stages:
            raise ValueError(f"stage must be one of {stages} at pp = {layout.pp}, got {stage!r}")
        stages = [stage]
    plans = [
        _stage_plan(dims, layout, workload, engine, gpu_bytes, reserve_bytes, recipe, act, s)
        for s in stages
    ]
    return max(plans, key=lambda p: p.peak)


def _check_split(dims: ModelDims, layout: Layout) -> None:
    if dims.heads % layout.tp or dims.kv_heads % layout.tp:
        raise ValueError(
            f"tp {layout.tp} must divide the {dims.heads} query and {dims.kv_heads} KV heads"
        )
    if dims.ffn % layout.tp:
        raise ValueError(f"tp {layout.tp} must divide the MLP width {dims.ffn}")
    if dims.layers % (layout.pp * layout.vpp):
        raise ValueError(
            f"pp x vpp = {layout.pp * layout.vpp} must divide the {dims.layers} layers"
        )


def _stage_plan(
    dims: ModelDims,
    layout: Layout,
    workload: Workload,
    engine: EngineSetup,
    gpu_bytes: int,
    reserve_bytes: int,
    recipe: Recipe,
    act: int,
    stage: str,
) -> MemoryPlan:
    params, largest = _stage_parameters(dims, layout, stage)
    shard = layout.dp if layout.distributed_optimizer else 1
    weights, gradients = params * act, params * 4.0
    main = 0.0 if workload.dtype == "fp32" else params * 4.0 / shard
    moments = params * 8.0 / shard
    state = weights + gradients + main + moments
    activations, working = stage_activation_bytes(
        recipe,
        dims,
        workload.tokens,
        act,
        stage_layers=dims.layers // layout.pp,
        tp=layout.tp,
        sequence_parallel=layout.sequence_parallel,
        recompute=layout.recompute,
        recompute_method=layout.recompute_method,
        recompute_num_layers=layout.recompute_num_layers,
        in_flight=_in_flight(layout, workload, stage),
        attention_span=min(workload.tokens, workload.sequence_length),
    )
    logits, forward_logits = 0.0, 0.0
    if stage in ("last", "only"):
        logits, forward_logits = _logits_bytes(dims, layout, workload)
        activations += final_bytes(
            recipe, dims, workload.tokens, act, layout.tp, layout.sequence_parallel
        )
    moments_shard = params / shard
    scratch = 4.0 * (moments_shard if workload.device == "cuda" else min(largest, moments_shard))
    scratch = 0.0 if workload.fused_adam else scratch
    engine_weights, kv, per_token, awake = _engine_bytes(
        dims, engine, gpu_bytes, state, workload, layout.tp
    )
    engine_total = engine_weights + max(kv, 0.0)
    beside = engine_total if awake else 0.0
    phases = {
        "rollout": state + engine_total,
        "logprobs": state + forward_logits + beside,
        "training": state + activations + max(logits, working) + beside,
        "optimizer": state + scratch + beside,
    }
    return MemoryPlan(
        model=dims.name,
        layout=layout,
        workload=workload,
        engine=engine,
        gpu_bytes=gpu_bytes,
        reserve_bytes=reserve_bytes,
        stage=stage,
        parameters_per_gpu=params,
        weights=weights,
        gradients=gradients,
        main_weights=main,
        optimizer_states=moments,
        activations=activations,
        recompute_working=working,
        logits=logits,
        optimizer_scratch=scratch,
        engine_weights=engine_weights,
        kv_cache=kv,
        kv_cache_tokens=int(max(kv, 0.0) // per_token),
        engine_awake_while_training=awake,
        phases=phases,
    )
