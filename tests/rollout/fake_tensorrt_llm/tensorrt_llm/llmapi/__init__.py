"""Fake of ``tensorrt_llm.llmapi``."""

from tensorrt_llm.llmapi.llm import LLM, CompletionOutput, Logprob, RequestOutput
from tensorrt_llm.sampling_params import SamplingParams

__all__ = ["LLM", "CompletionOutput", "Logprob", "RequestOutput", "SamplingParams"]
