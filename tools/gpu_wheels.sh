#!/usr/bin/env bash
# Download the Python wheels that an offline GPU machine lacks into .whl/ (cp312, manylinux x86-64),
# for tools/gpu_check.sh to install with `pip install --no-index --no-deps --target ...`.
#
# The list is what MegaMeta needs beyond an image that already has torch (CUDA), transformers,
# tokenizers, sentencepiece, safetensors, tensorboard, numpy, pyyaml, tqdm, psutil, ninja, py-cpuinfo,
# msgpack, einops, nvidia-ml-py, mpi4py, matplotlib, pyarrow and pandas: DeepSpeed and its pure-Python
# needs, zstandard (.zst corpora), and Hugging Face datasets (only `hf:` sources read it). Versions are the ones the CPU venv
# was tested with. DeepSpeed ships only a source archive on PyPI: it is built here into a
# py3-none-any wheel (no ops prebuilt: they JIT-compile on the GPU machine), which needs a Python
# that has torch ($BUILD_PYTHON, default .venv/bin/python).
#
# Usage: tools/gpu_wheels.sh            (run from anywhere; writes <checkout>/.whl/)
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=.whl
PY_VERSION=${PY_VERSION:-3.12}
BUILD_PYTHON=${BUILD_PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
WHEELS=(
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0 hjson==3.1.0 zstandard==0.25.0 orjson==3.13.0
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
)
DEEPSPEED=deepspeed==0.19.8

mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${WHEELS[@]}"
DS_BUILD_OPS=0 "$BUILD_PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "$DEEPSPEED"

# Two versions of one package would stop the install on the GPU machine: keep the listed ones only.
for whl in "$DEST"/*.whl; do
    name=$(basename "$whl" | cut -d- -f1-2 | tr '_' '-' | tr '[:upper:]' '[:lower:]')
    keep=0
    for spec in "${WHEELS[@]}" "$DEEPSPEED"; do
        [ "$(echo "$spec" | tr '_' '-' | sed 's/==/-/')" = "$name" ] && keep=1
    done
    [ "$keep" = 1 ] || { echo "removing stale $whl"; rm -f "$whl"; }
done
ls -1 "$DEST"
echo "total: $(du -ch "$DEST"/*.whl | tail -1 | cut -f1) in $(find "$DEST" -name "*.whl" | wc -l) wheels (the device tree limit is 64 MiB)"
