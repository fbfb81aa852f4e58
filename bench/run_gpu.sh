#!/usr/bin/env bash
# The GPU benchmark as ONE device-tool command (H100 or H200; ~6–8 minutes). From a session whose task has
# a device machine, after `bash bench/fetch_gpu_wheels.sh` here:
#     run(command="BENCH_COMMIT=$(git rev-parse --short HEAD) bash bench/run_gpu.sh", carry=[".whl"],
#         timeout_s=580)      (write the sha in literally: the copy there has no .git)
# Results come back under $OUT: gpu-<card>.md, gpu-<card>.json and bench_gpu.log. Copy the .md/.json into
# bench/results/ and commit them with the commit they name.
#
# spaCy is not installed on the GPU image, so the reference data path adds nlp() tagging at
# SPACY_CAPTIONS_PER_S captions/s per core: default 202, the per-core figure in shared/method.md's anchors
# (bench/bench_data_cpu.py measures it on any CPU; pass another with SPACY_CAPTIONS_PER_S=...).
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT_DIR="${OUT:-bench/results}"
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, open_clip, sqlalchemy, toolkit.train; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), 'open_clip', open_clip.__version__)" || { echo "imports failed: carry .whl"; exit 1; }
BENCH_COMMIT="${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" \
  python3 bench/bench_gpu.py --workers "${WORKERS:-16}" --spacy-captions-per-s "${SPACY_CAPTIONS_PER_S:-202}" \
  --out-dir "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/bench_gpu.log"
exit "${PIPESTATUS[0]}"
