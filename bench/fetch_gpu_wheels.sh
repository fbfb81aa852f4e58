#!/usr/bin/env bash
# Run HERE (a machine with PyPI access), in the repo root, once before bench/run_gpu.sh travels to a GPU
# machine: downloads into .whl/ the pure/cp312 wheels the GPU image lacks (see the device README's
# package list: it has torch, torchvision, timm, regex, tqdm, huggingface_hub, safetensors, numpy, pillow,
# typer, rich, markupsafe, typing-extensions, but not these). About 7 MB.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || grep -qx '/.whl/' .gitignore || echo /.whl/ >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3
ls -la .whl
