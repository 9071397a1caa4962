#!/bin/bash
# Issue 12 item 8: the bundled scene's 30 queries (lighting, blur, lowlight) localized on a GPU, with
#  (a) the crossfire-lite map trained on 2 CPU cores (the CPU figures' map, checkpoint without optimizer state),
#  (b) a default `crossfire` map trained here on the GPU for as long as the lease allows.
# DRY=1 runs it on this CPU machine (no install, 2 training iterations, one query folder) to check the commands.
#
# Prepared on the CPU machine by benchmarks/gpu_prepare.sh, then sent with the device tool (carry: .whl .gpu
# demo_output/scene), from the repo root:
#   .whl/  cp312 wheels of what the device image lacks (nerfstudio 1.1.5, nerfacc, gsplat, tyro, viser, kornia, poselib,
#          ...: the list is in gpu_prepare.sh);
#   .gpu/lite/demo/crossfire-lite/map/  the `make demo` map (config.yml, dataparser_transforms.json, the checkpoint
#          saved with only "step" and "pipeline": 8 MB instead of 24);
#   .gpu/queries/bundled/{lighting,blur,lowlight}/  the bundled scene's queries (benchmarks' lighting, blur, lowlight);
#   run: `TRAIN_S=270 bash benchmarks/gpu_run.sh` (writes under $OUT); TRAIN=0: the lite map only; PROFILE=1: also
#   `benchmarks.profile_localize` on the lighting queries; .gpu/old/ (`git archive COMMIT crossfire_ns benchmarks
#   method_configs`): the same queries with that commit's code too (old.csv).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p $OUT
T0=$(date +%s); el(){ echo "=== [$(( $(date +%s)-T0 )) s] $*" | tee -a $OUT/summary.txt; }
PY=python3; ITERS=${ITERS:-3000}; TRAIN_S=${TRAIN_S:-300}; FOLDERS="lighting blur lowlight"; DEV=cuda
if [ "${DRY:-0}" = 1 ]; then PY=.venv/bin/python; ITERS=2; TRAIN_S=120; FOLDERS=lighting; DEV=cpu; fi
if [ "${DRY:-0}" != 1 ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $OUT/env.txt 2>&1
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export NERFSTUDIO_METHOD_CONFIGS="crossfire=method_configs.crossfire_methods:crossfire,crossfire-lite=method_configs.crossfire_methods:crossfire_lite"
$PY - >> $OUT/env.txt 2>&1 <<'EOF'
import os, sys, torch, numpy, cv2, nerfstudio, poselib, kornia, crossfire_ns
print(sys.version); print("cpus", os.cpu_count(), "torch threads", torch.get_num_threads())
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("numpy", numpy.__version__, "cv2", cv2.__version__, "kornia", kornia.__version__)
EOF
cat $OUT/env.txt
el "installed"
Q=.gpu/queries/bundled
DIRS=$(for f in $FOLDERS; do echo -n "$Q/$f "; done)

# (a) the CPU-trained lite map, localized on the GPU
$PY -m benchmarks.confidence collect --load-config .gpu/lite/demo/crossfire-lite/map/config.yml \
  --query-dirs $DIRS --output $OUT/lite.csv --label bundled-lite-gpu > $OUT/lite.log 2>&1
LITE_RC=$?; el "lite map localized: rc=$LITE_RC"; tail -5 $OUT/lite.log
if [ $LITE_RC != 0 ]; then TRAIN_S=60; fi  # localization is broken: only smoke-test the GPU training, then stop
if [ "${PROFILE:-0}" = 1 ] && [ $LITE_RC = 0 ]; then  # where a query's time goes on this machine
  $PY -m benchmarks.profile_localize --load-config .gpu/lite/demo/crossfire-lite/map/config.yml \
    --query-dir $Q/lighting --rows 30 > $OUT/profile.txt 2>&1; el "profiled: rc=$?"; grep unprofiled $OUT/profile.txt
fi
if [ -d .gpu/old ] && [ $LITE_RC = 0 ]; then  # the same queries with an older commit's code (git archive), same machine
  PYTHONPATH=/tmp/site:$PWD/.gpu/old $PY .gpu/old/benchmarks/confidence.py collect \
    --load-config .gpu/lite/demo/crossfire-lite/map/config.yml --query-dirs $DIRS --output $OUT/old.csv \
    --label bundled-lite-gpu-old > $OUT/old.log 2>&1; el "older code: rc=$?"
fi
if [ "${TRAIN:-1}" = 0 ]; then
  COLUMNS=160 $PY -m benchmarks.confidence summary $OUT/lite.csv 2>&1 | tee -a $OUT/summary.txt; el "done"; exit 0
fi

# (b) the default crossfire config trained on the GPU (stopped by ITERS or TRAIN_S, whichever comes first)
rm -rf /tmp/maps
timeout -s INT $TRAIN_S $PY -m nerfstudio.scripts.train crossfire --data demo_output/scene --output-dir /tmp/maps \
  --experiment-name gpu --timestamp map --vis tensorboard --machine.device-type $DEV --machine.seed 42 \
  --max-num-iterations $ITERS --steps-per-save 500 --steps-per-eval-batch 1000000000 \
  --steps-per-eval-image 1000000000 --steps-per-eval-all-images 1000000000 > $OUT/train.log 2>&1
el "training: rc=$? (124/130: stopped by the time limit)"; grep -v "^\s*$" $OUT/train.log | tail -8
CKPTS=/tmp/maps/gpu/crossfire/map/nerfstudio_models
$PY - $CKPTS <<'EOF' 2>&1 | tee -a $OUT/summary.txt
import sys, torch
from pathlib import Path
for ckpt in sorted(Path(sys.argv[1]).glob("*.ckpt"), reverse=True):
    try:
        torch.load(ckpt, map_location="cpu", weights_only=False); print("checkpoint", ckpt.name); break
    except Exception as err:  # a checkpoint cut by the time limit
        print("dropping", ckpt.name, err); ckpt.unlink()
EOF
[ $LITE_RC != 0 ] && exit 3
$PY -m benchmarks.confidence collect --load-config /tmp/maps/gpu/crossfire/map/config.yml \
  --query-dirs $DIRS --output $OUT/gpu.csv --label bundled-crossfire-gpu > $OUT/gpu.log 2>&1
el "gpu map localized: rc=$?"; tail -5 $OUT/gpu.log
COLUMNS=160 $PY -m benchmarks.confidence summary $OUT/lite.csv $OUT/gpu.csv 2>&1 | tee -a $OUT/summary.txt
el "done"
