"""TRTLLMEngine against a recording fake of the TensorRT-LLM 1.2.0 API.

TensorRT-LLM cannot be installed here, so these tests pin what the engine sends to the API it
was written against (constructor keywords, SamplingParams, RPCs) and how it converts what comes
back; they say nothing about the real package's behaviour beyond what the fake mirrors.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import nemo_red.rollout.trtllm_engine as trtllm_engine
from nemo_red.rollout.base import RolloutEngine, SamplingParams
from nemo_red.rollout.trtllm_engine import SLEEP_TAGS, WORKER_EXTENSION, TRTLLMEngine

FAKE_ROOT = Path(__file__).parent / "fake_tensorrt_llm"
VOCAB, EOS = 32, 31
MAX_LEN = 16


def _drop_tensorrt_llm_modules() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorrt_llm"]:
        del sys.modules[name]


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake ``tensorrt_llm`` package, imported fresh for each test and removed after."""
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorrt_llm"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKE_ROOT))
    module = importlib.import_module("tensorrt_llm")
    assert Path(module.__file__).is_relative_to(FAKE_ROOT)
    yield module
    _drop_tensorrt_llm_modules()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": VOCAB, "eos_token_id": EOS}))
    return tmp_path


def _engine(trt: Any, model_dir: Path, **kwargs: Any) -> tuple[TRTLLMEngine, Any]:
    kwargs.setdefault("max_model_len", MAX_LEN)
    engine = TRTLLMEngine(model_dir, **kwargs)
    return engine, trt.LLM.instances[-1]


def _calls(llm: Any, name: str) -> list[dict[str, Any]]:
    return [record for call, record in llm.calls if call == name]


def _rpcs(llm: Any) -> list[tuple[str, tuple[Any, ...]]]:
    return [(r["method"], r["args"]) for r in _calls(llm, "_collective_rpc")]


def test_status_is_stated_and_module_imports_without_tensorrt_llm(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    assert "not verified against a real TensorRT-LLM" in trtllm_engine.__doc__
    assert "not verified against a real TensorRT-LLM" in " ".join(TRTLLMEngine.__doc__.split())
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import tensorrt_llm -> ImportError
    importlib.reload(trtllm_engine)
    with pytest.raises(ImportError, match="needs tensorrt_llm"):
        trtllm_engine.TRTLLMEngine(model_dir, max_model_len=MAX_LEN)


def test_constructor_passes_documented_kwargs(trt: Any, model_dir: Path) -> None:
    engine, llm = _engine(trt, model_dir, tensor_parallel_size=2, max_batch_size=8)
    assert isinstance(engine, RolloutEngine)
    assert llm.init_args == {
        "model": str(model_dir),
        "tokenizer": None,
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "max_seq_len": MAX_LEN,
        "orchestrator_type": "ray",
        "ray_worker_extension_cls": WORKER_EXTENSION,
        "enable_sleep": True,
        "max_batch_size": 8,
    }
    assert engine.vocab_size == VOCAB
    assert [w.device_id for w in llm.workers] == [0, 1]
    assert all(hasattr(w, "update_weights") for w in llm.workers)  # extension mixed in
    with pytest.raises(ValueError, match="invalid argument: max_batch_sise"):
        TRTLLMEngine(model_dir, max_model_len=MAX_LEN, max_batch_sise=8)


def test_greedy_request_mapping_and_replication(trt: Any, model_dir: Path) -> None:
    engine, llm = _engine(trt, model_dir)
    with pytest.raises(ValueError, match="Greedy decoding"):  # why the engine replicates
        trt.SamplingParams(n=3, temperature=0.0)
    out = engine.generate([[1, 2], [14]], SamplingParams(n=3, temperature=0.0, max_new_tokens=4))
    (call,) = _calls(llm, "generate")
    assert call["inputs"] == [[1, 2]] * 3 + [[14]] * 3
    for sp in call["sampling_params"]:
        assert (sp.n, sp.temperature, sp.top_p, sp.top_k, sp.seed) == (1, 0.0, None, None, None)
        assert (sp.max_tokens, sp.end_id, sp.stop_token_ids) == (4, -1, None)
        assert (sp.include_stop_str_in_output, sp.logprobs, sp.detokenize) == (True, 1, False)
    assert [len(c) for c in out] == [3, 3]
    assert all(torch.equal(c.token_ids, torch.tensor([3, 4, 5, 6])) for c in out[0])
    assert all(c.token_ids.tolist() == [15, 16, 17, 18] for c in out[1])
    assert all(c.logprobs.tolist() == [-0.5] * 4 and c.finish_reason == "length" for c in out[1])


def test_sampled_request_mapping(trt: Any, model_dir: Path) -> None:
    engine, llm = _engine(trt, model_dir)
    params = SamplingParams(
        n=2, temperature=0.7, top_p=0.9, top_k=5, max_new_tokens=20, stop_token_ids=(3,), seed=7
    )
    with pytest.warns(UserWarning, match="raw-model log-probs"):
        engine.generate([[1, 2], [5, 6, 7]], params)
    (call,) = _calls(llm, "generate")
    assert call["inputs"] == [[1, 2], [5, 6, 7]]
    first, second = call["sampling_params"]
    assert (first.n, first.temperature, first.top_p, first.top_k) == (2, 0.7, 0.9, 5)
    assert (first.seed, second.seed) == (7, 8)
    assert (first.max_tokens, second.max_tokens) == (14, 13)  # clamped to the context
    assert first.stop_token_ids == [3]
    assert first.end_id == -1
    assert first.logprobs == 1
    assert first.include_stop_str_in_output
    assert not first.detokenize


def test_unseeded_requests_draw_seeds_from_the_engine_seed(trt: Any, model_dir: Path) -> None:
    def seeds(engine_seed: int) -> list[int]:
        engine, llm = _engine(trt, model_dir, seed=engine_seed)
        for _ in range(2):
            engine.generate([[1], [2]], SamplingParams(max_new_tokens=2))
        return [sp.seed for c in _calls(llm, "generate") for sp in c["sampling_params"]]

    a, b, c = seeds(0), seeds(0), seeds(1)
    assert a == b
    assert a != c
    assert len(set(a)) == 4


def test_outputs_become_completions_in_prompt_order(trt: Any, model_dir: Path) -> None:
    engine, _ = _engine(trt, model_dir)
    out = engine.generate([[1, 2], [29]], SamplingParams(n=2, max_new_tokens=4))
    expected = [[[3, 4, 5, 6], [4, 5, 6, 7]], [[30, 31, 0, 1], [31, 0, 1, 2]]]  # EOS 31 passes
    assert [[c.token_ids.tolist() for c in p] for p in out] == expected
    for per_prompt in out:
        for j, c in enumerate(per_prompt):
            assert c.token_ids.dtype == torch.int64
            assert c.logprobs.dtype == torch.float32
            assert torch.equal(c.logprobs, torch.full((4,), -0.5 - 0.25 * j))  # sampled token's
            assert c.finish_reason == "length"


def test_stop_token_is_kept_with_finish_reason_stop(trt: Any, model_dir: Path) -> None:
    engine, _ = _engine(trt, model_dir)
    out = engine.generate([[1, 2]], SamplingParams(n=2, max_new_tokens=8, stop_token_ids=(5,)))
    assert [c.token_ids.tolist() for c in out[0]] == [[3, 4, 5], [4, 5]]
    assert [c.finish_reason for c in out[0]] == ["stop", "stop"]
    assert [c.logprobs.numel() for c in out[0]] == [3, 2]


def test_context_limit_clamps_generation(trt: Any, model_dir: Path) -> None:
    engine, _ = _engine(trt, model_dir)
    (completions,) = engine.generate([list(range(14))], SamplingParams(max_new_tokens=10))
    assert completions[0].token_ids.tolist() == [14, 15]
    assert completions[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("prompts", "params", "message"),
    [
        ([], SamplingParams(), "no prompts"),
        ([[1], []], SamplingParams(), "prompt 1 is empty"),
        ([[1, VOCAB]], SamplingParams(), "outside the vocabulary"),
        ([list(range(MAX_LEN))], SamplingParams(), "leaving no room"),
        ([[1]], SamplingParams(stop_token_ids=(VOCAB,)), "stop_token_ids"),
    ],
)
def test_bad_requests_are_refused_before_any_call(
    trt: Any, model_dir: Path, prompts: list[list[int]], params: SamplingParams, message: str
) -> None:
    engine, llm = _engine(trt, model_dir)
    engine.sleep()
    with pytest.raises(ValueError, match=message):
        engine.generate(prompts, params)
    assert [name for name, _ in llm.calls] == ["__init__", "_collective_rpc"]  # init + sleep


def test_update_weights_sends_every_hf_tensor(
    trt: Any, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TRTLLMEngine, "_ipc_device", lambda self, index: torch.device("cpu"))
    engine, llm = _engine(trt, model_dir, tensor_parallel_size=2, refit_bucket_bytes=64)
    state = {
        "model.embed_tokens.weight": torch.randn(VOCAB, 4),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4),
        "model.layers.0.self_attn.q_proj.bias": torch.randn(4),
        "model.norm.weight": torch.randn(4),
        "lm_head.weight": torch.randn(VOCAB, 4),
        "step_counter": torch.tensor([3], dtype=torch.int64),
    }
    engine.update_weights(state)
    rpcs = _rpcs(llm)
    assert {method for method, _ in rpcs} == {"update_weights"}
    assert rpcs[-1][1] == (None,)  # the finalizing call
    assert all(set(args[0]) == {"GPU-fake-0", "GPU-fake-1"} for _, args in rpcs[:-1])
    assert len(rpcs) - 1 > 1  # several buckets
    for worker in llm.workers:
        assert worker.refits[-1] is None
        assert [n for names in worker.refits[:-1] for n in names] == list(state)
        for name, tensor in state.items():
            loaded = worker.loaded[name]
            want = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
            assert loaded.dtype == want.dtype
            assert torch.equal(loaded, want)


def test_sleep_wake_and_auto_wake(
    trt: Any, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TRTLLMEngine, "_ipc_device", lambda self, index: torch.device("cpu"))
    engine, llm = _engine(trt, model_dir)
    engine.sleep()
    engine.sleep()
    assert _rpcs(llm) == [("sleep", (list(SLEEP_TAGS),))]
    assert llm.workers[0].released == set(SLEEP_TAGS)
    engine.wake()
    engine.wake()
    assert _rpcs(llm)[1:] == [("wakeup", (list(SLEEP_TAGS),))]
    assert llm.workers[0].released == set()
    engine.sleep()
    engine.generate([[1]], SamplingParams(max_new_tokens=1))  # the fake refuses while asleep
    engine.sleep()
    engine.update_weights({"w": torch.ones(2)})
    methods = [m for m, _ in _rpcs(llm)]
    assert methods[2:] == ["sleep", "wakeup", "sleep", "wakeup", "update_weights", "update_weights"]


def test_sleep_is_a_noop_when_disabled(trt: Any, model_dir: Path) -> None:
    engine, llm = _engine(trt, model_dir, enable_sleep=False)
    engine.sleep()
    engine.wake()
    assert _rpcs(llm) == []
    assert llm.init_args["enable_sleep"] is False


def test_shutdown_is_idempotent_and_final(trt: Any, model_dir: Path) -> None:
    engine, llm = _engine(trt, model_dir)
    engine.shutdown()
    engine.shutdown()
    assert len(_calls(llm, "shutdown")) == 1
    for call in (
        lambda: engine.generate([[1]], SamplingParams()),
        lambda: engine.update_weights({}),
        engine.sleep,
        engine.wake,
    ):
        with pytest.raises(RuntimeError, match="shut down"):
            call()


def test_unexpected_outputs_are_errors(trt: Any) -> None:
    from tensorrt_llm.llmapi import CompletionOutput, Logprob

    good = CompletionOutput(index=0, token_ids=[4], logprobs=[{4: Logprob(-1.0)}])
    good.finish_reason = "length"
    assert trtllm_engine._completion(good).logprobs.tolist() == [-1.0]
    cases = [
        (
            CompletionOutput(
                0, token_ids=[4], logprobs=[{4: Logprob(-1.0)}], finish_reason="timeout"
            ),
            "finish_reason",
        ),
        (
            CompletionOutput(0, token_ids=[4], logprobs=[{5: Logprob(-1.0)}], finish_reason="stop"),
            "sampled token 4",
        ),
        (
            CompletionOutput(0, token_ids=[4, 5], logprobs=[-1.0], finish_reason="stop"),
            "1 log-probs for 2",
        ),
    ]
    for out, message in cases:
        with pytest.raises(RuntimeError, match=message):
            trtllm_engine._completion(out)


REQUIRED = inspect.Parameter.empty
# Parameter names, kinds and defaults of the real API, transcribed from TensorRT-LLM 1.2.0:
# - LLM.__init__/generate/_collective_rpc/shutdown: tensorrt_llm/llmapi/llm.py as published in
#   the 1.2.0 docs (NVIDIA/TensorRT-LLM gh-pages commit 7e873e54, 1.2.0/_modules/...);
# - SamplingParams: tensorrt_llm/sampling_params.py, same docs commit (kw_only dataclass);
# - RayGPUWorker.sleep/wakeup: tensorrt_llm/executor/ray_gpu_worker.py at commit 0acd798d;
# - WorkerExtension.update_weights: tensorrt_llm/llmapi/rlhf_utils.py at commit 65b31db1.
P, K, V = "positional_or_keyword", "keyword_only", "var_keyword"
# SamplingParams is a kw_only dataclass: (field, default) in declaration order, init fields only.
SAMPLING_PARAMS_FIELDS: list[tuple[str, Any]] = [
    ("end_id", None),
    ("pad_id", None),
    ("max_tokens", 32),
    ("bad", None),
    ("bad_token_ids", None),
    ("stop", None),
    ("stop_token_ids", None),
    ("include_stop_str_in_output", False),
    ("embedding_bias", None),
    ("logits_processor", None),
    ("apply_batched_logits_processor", False),
    ("n", 1),
    ("best_of", None),
    ("use_beam_search", False),
    ("top_k", None),
    ("top_p", None),
    ("top_p_min", None),
    ("top_p_reset_ids", None),
    ("top_p_decay", None),
    ("seed", None),
    ("temperature", None),
    ("min_tokens", None),
    ("beam_search_diversity_rate", None),
    ("repetition_penalty", None),
    ("presence_penalty", None),
    ("frequency_penalty", None),
    ("prompt_ignore_length", None),
    ("length_penalty", None),
    ("early_stopping", None),
    ("no_repeat_ngram_size", None),
    ("min_p", None),
    ("beam_width_array", None),
    ("logprobs", None),
    ("prompt_logprobs", None),
    ("return_context_logits", False),
    ("return_generation_logits", False),
    ("exclude_input_from_output", True),
    ("return_encoder_output", False),
    ("return_perf_metrics", False),
    ("additional_model_outputs", None),
    ("_context_logits_auto_enabled", False),
    ("_generation_logits_auto_enabled", False),
    ("_return_log_probs", False),
    ("lookahead_config", None),
    ("guided_decoding", None),
    ("ignore_eos", False),
    ("detokenize", True),
    ("add_special_tokens", True),
    ("truncate_prompt_tokens", None),
    ("skip_special_tokens", True),
    ("spaces_between_special_tokens", True),
]
EXPECTED_SIGNATURES: dict[str, list[tuple[str, str, Any]]] = {
    "LLM.__init__": [
        ("self", P, REQUIRED),
        ("model", P, REQUIRED),
        ("tokenizer", P, None),
        ("tokenizer_mode", P, "auto"),
        ("skip_tokenizer_init", P, False),
        ("trust_remote_code", P, False),
        ("tensor_parallel_size", P, 1),
        ("dtype", P, "auto"),
        ("revision", P, None),
        ("tokenizer_revision", P, None),
        ("kwargs", V, REQUIRED),
    ],
    "LLM.generate": [
        ("self", P, REQUIRED),
        ("inputs", P, REQUIRED),
        ("sampling_params", P, None),
        ("use_tqdm", P, True),
        ("lora_request", P, None),
        ("prompt_adapter_request", P, None),
        ("kv_cache_retention_config", P, None),
        ("disaggregated_params", P, None),
        ("scheduling_params", P, None),
        ("cache_salt", P, None),
    ],
    "LLM._collective_rpc": [
        ("self", P, REQUIRED),
        ("method", P, REQUIRED),
        ("args", P, ()),
        ("kwargs", P, None),
        ("non_block", P, False),
        ("unique_reply_rank", P, None),
    ],
    "LLM.shutdown": [("self", P, REQUIRED)],
    "RayGPUWorker.sleep": [("self", P, REQUIRED), ("sleep_tags", P, REQUIRED)],
    "RayGPUWorker.wakeup": [("self", P, REQUIRED), ("wakeup_tags", P, REQUIRED)],
    "WorkerExtension.update_weights": [("self", P, REQUIRED), ("ipc_handles", P, None)],
    "SamplingParams": [(name, K, default) for name, default in SAMPLING_PARAMS_FIELDS],
}


def test_fake_signatures_match_tensorrt_llm_1_2_0(trt: Any) -> None:
    from tensorrt_llm.llmapi.llm import RayGPUWorker
    from tensorrt_llm.llmapi.rlhf_utils import WorkerExtension

    objects = {
        "LLM.__init__": trt.LLM.__init__,
        "LLM.generate": trt.LLM.generate,
        "LLM._collective_rpc": trt.LLM._collective_rpc,
        "LLM.shutdown": trt.LLM.shutdown,
        "RayGPUWorker.sleep": RayGPUWorker.sleep,
        "RayGPUWorker.wakeup": RayGPUWorker.wakeup,
        "WorkerExtension.update_weights": WorkerExtension.update_weights,
        "SamplingParams": trt.SamplingParams,
    }
    assert objects.keys() == EXPECTED_SIGNATURES.keys()
    for key, obj in objects.items():
        got = [
            (p.name, p.kind.name.lower(), p.default)
            for p in inspect.signature(obj).parameters.values()
        ]
        assert got == EXPECTED_SIGNATURES[key], key
