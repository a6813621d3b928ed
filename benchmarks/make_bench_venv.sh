#!/usr/bin/env bash
# Build .venv-bench: nnU-Net v2 2.8.1 beside autoseg, for side-by-side benchmarks only.
#
# Trap avoided here: nnunetv2 -> dynamic-network-architectures -> timm -> newest torchvision,
# which needs a newer torch and pulls gigabytes of CUDA packages. nnU-Net's default U-Nets do not
# need timm, so nnunetv2, dynamic-network-architectures and acvl-utils are installed without
# their dependencies, and the dependencies they do use are listed explicitly (no timm, no
# torchvision). torch is pinned to the local CPU wheel first.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
PY=${PY:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/pip install --disable-pip-version-check -q"
$pip torch==2.13.0
$pip --no-deps nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 acvl-utils==0.2.6 \
    batchgeneratorsv2==0.3.6
$pip tqdm scipy "batchgenerators>=0.25.1" "numpy>=1.24" scikit-learn "scikit-image>=0.19.3" \
    "SimpleITK>=2.2.1" pandas graphviz tifffile requests nibabel matplotlib seaborn \
    imagecodecs yacs einops "blosc2>=3.3.2" connected-components-3d pytest hypothesis
$pip -e .   # autoseg itself, so one venv can drive both systems in the same run
"$VENV/bin/python" -c "import nnunetv2, torch; print('nnunetv2 ready, torch', torch.__version__)"
