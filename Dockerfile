# nemo_red on the NGC PyTorch image (CUDA, Transformer Engine and apex come with it).
# Build:  docker build -t nemo-red .
# Run:    docker run --gpus all --ipc=host -v $PWD/runs:/workspace/nemo_red/runs nemo-red \
#           scripts/launch_torchrun.sh --config examples/conf/red_qwen2.5_math_1.5b.yaml
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.09-py3
FROM ${BASE_IMAGE}

WORKDIR /workspace/nemo_red
COPY pyproject.toml README.md ./
COPY nemo_red ./nemo_red
COPY examples ./examples
COPY scripts ./scripts
COPY benchmarks ./benchmarks

# Keep the image's torch, Transformer Engine and apex: install the package and its other
# dependencies without letting pip replace torch.
RUN pip install --no-cache-dir "megatron-core>=0.16.1,<0.20" && \
    pip install --no-cache-dir -e . && \
    python -c "import torch, megatron.core, nemo_red; print(torch.__version__, megatron.core.__version__)"

ENV OMP_NUM_THREADS=1
ENTRYPOINT []
CMD ["nemo-red", "--help"]
