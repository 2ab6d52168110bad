#!/usr/bin/env bash
# The CUDA tests and GPU figures, in one go, for a machine with an NVIDIA GPU whose python3 already
# has torch, numpy, click, pyyaml and tqdm (nothing is installed from the network):
#
#     scripts/gpu_checks.sh OUTDIR
#
# Wheels in .whl/ are installed into a temporary folder first when present. python-shogi is needed
# (the KIF reader imports it); cshogi is optional: without it the one CUDA test that compares with
# it is skipped, and the feature bench reads its positions with shogitrain itself. For a machine
# with CPython 3.12, fetch them where pip works with
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 -d .whl python-shogi==1.1.1 cshogi==1.1.0
# (7.7 MB; .whl/ is git-ignored, so carry it). Every step's output goes to
# OUTDIR/*.txt; a failing step does not stop the later ones, and the exit status says whether all
# passed. Positions come from the bundled data/.
set -u -o pipefail
out=${1:-gpu-checks}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/gpu-site"
fi
status=0
step() {  # step NAME COMMAND...: run, keep its output, remember a failure
    local name=$1; shift
    echo "== $name: $*" | tee "$out/$name.txt"
    "$@" 2>&1 | tee -a "$out/$name.txt" || status=1
}
step gpu nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step torch "$py" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
step test_cuda "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py
for batch in 4096 32768 131072; do
    step "features_cuda_$batch" "$py" bench/features.py --device cuda --no-cshogi --batch "$batch" \
        --positions 262144 --repeats 5 --dtypes float32,bfloat16,uint8
done
step train_step_cuda "$py" bench/train_step.py --device cuda --full --amp bf16
# the step times of configs/experiments/blog-2021-gpu.yaml (fp16, as the note): its expected run time
step train_step_cuda_fp16 "$py" bench/train_step.py --device cuda --full --amp fp16 --only c --repeats 3
exit $status
