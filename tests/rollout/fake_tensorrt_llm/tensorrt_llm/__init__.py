"""Recording fake of ``tensorrt_llm`` 1.2.0, for tests only: this is not TensorRT-LLM code.

Put ``tests/rollout/fake_tensorrt_llm`` on ``sys.path`` and ``import tensorrt_llm`` gives the
few classes ``nemo_red.rollout.trtllm_engine`` uses, with the constructor and method signatures
of the 1.2.0 sources (keyword names, defaults), argument checks modelled on theirs, a record of
every call and a deterministic toy "model": the next token is (previous token + 1 + sequence
index) mod vocab_size.
"""

from tensorrt_llm.llmapi.llm import LLM
from tensorrt_llm.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams"]
__version__ = "1.2.0+fake"
