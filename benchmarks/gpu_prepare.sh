#!/bin/bash
# Prepares what benchmarks/gpu_run.sh needs on a lent GPU machine (whose image has torch, numpy, OpenCV, rich,
# matplotlib, scipy, ... but not nerfstudio and what it pulls in, and no network): run from the repo root, after
# `make demo`:
#   bash benchmarks/gpu_prepare.sh [QUERIES] [OLD_COMMIT]
# QUERIES: a folder with lighting/, blur/, lowlight/ query folders; default (or "-"): made from the demo's queries with
# benchmarks.lighting's conditions of those names, as session 16's and 17's CPU figures were.
# Writes .whl/ (cp312 wheels, about 33 MB), .gpu/lite/ (the demo map with a checkpoint of only "step" and "pipeline",
# 8 MB), .gpu/queries/bundled/, .gpu/run.sh and, given OLD_COMMIT, .gpu/old/ (that commit's code, to time both in one
# call). Both folders are added to .git/info/exclude. Then, with the device tool: carry .whl .gpu demo_output/scene and
# run `TRAIN_S=270 bash .gpu/run.sh` (or TRAIN=0 PROFILE=1 ...).
set -eu
QUERIES=${1:--}
OLD=${2:-}
PY=${PY:-.venv/bin/python}
MAP=demo_output/runs/demo/crossfire-lite/map
[ -f $MAP/config.yml ] || { echo "$MAP/config.yml: no demo map; run make demo first" >&2; exit 2; }
mkdir -p .git/info
for d in /.whl/ /.gpu/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
# what the device image lacks, at this project's pins (fpsample: the newest with a cp312 wheel; only imported)
WHEELS="nerfstudio==1.1.5 nerfacc==0.5.2 gsplat==1.4.0 tyro==1.0.17 typeguard==4.6.1 docstring_parser==0.18.0
viser==0.2.7 websockets==17.4 msgspec==0.23.0 kornia==0.9.0 kornia_rs==0.2.0 poselib==2.0.5 appdirs==1.4.4
backports.zstd==1.8.0 defusedxml==0.7.1 dill==0.4.1 multiprocess==0.70.19 pathos==0.3.5 ppft==1.7.8 pox==0.3.7
pyquaternion==0.9.9 pytorch-msssim==1.0.0 rawpy==0.28.0 splines==0.3.0 tensorly==0.10.0 lz4==4.4.5 PySocks==1.7.1
fpsample==0.3.3"
mkdir -p .whl
for w in $WHEELS; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$w"
done
mkdir -p .gpu/lite/demo/crossfire-lite/map/nerfstudio_models .gpu/queries
cp $MAP/config.yml $MAP/dataparser_transforms.json .gpu/lite/demo/crossfire-lite/map/
$PY - $MAP .gpu/lite/demo/crossfire-lite/map <<'EOF'
import sys
from pathlib import Path

import torch

source, target = Path(sys.argv[1]), Path(sys.argv[2])
checkpoint = sorted((source / "nerfstudio_models").glob("*.ckpt"))[-1]
state = torch.load(checkpoint, map_location="cpu", weights_only=False)
torch.save({"step": state["step"], "pipeline": state["pipeline"]}, target / "nerfstudio_models" / checkpoint.name)
EOF
rm -rf .gpu/queries/bundled
if [ "$QUERIES" = - ]; then
  PYTHONPATH=. $PY -c "from pathlib import Path; from benchmarks.lighting import CONDITIONS, relight_folder
for c in ('lighting', 'blur', 'lowlight'):
    relight_folder(Path('demo_output/scene/queries'), Path('.gpu/queries/bundled') / c, CONDITIONS[c])"
else
  cp -r "$QUERIES" .gpu/queries/bundled
fi
cp benchmarks/gpu_run.sh .gpu/run.sh
if [ -n "$OLD" ]; then rm -rf .gpu/old && mkdir -p .gpu/old && git archive "$OLD" crossfire_ns benchmarks method_configs | tar -x -C .gpu/old; fi
du -sh .whl .gpu demo_output/scene
