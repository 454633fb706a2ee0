#!/usr/bin/env bash
# Issue 13's GPU measurements in one call on a lent GPU machine (see docs/benchmarks.md):
#   ViT-L/14 HySAC and Safe-CLIP training steps at batch 128/64/32 in bf16 (vs the reference-style
#   loop in bf16 and fp32; checkpointing; a torch.profiler table; torch.compile at batch 128), then
#   collection scoring throughput (ViT-B-32 and ViT-L-14, bf16, 8 DataLoader workers).
# The machine has torch but not open_clip/geoopt/peft/faiss: they travel as wheels in .whl/
# (pip download ... -d .whl open_clip_torch==3.3.0 geoopt==0.5.1 peft==0.21.2 ftfy==6.3.1 wcwidth==0.9.4 faiss-cpu==1.15.1).
# Results land in $OUT (train.json, profile.txt, collection.json and logs).
set -u
OUT=${OUT:-/tmp/hysafe-device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# the package as installed: geometry/ and losses/ are hysafe.geometry and hysafe.losses (pyproject's package-dir)
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r hysafe /tmp/pkg/ && cp -r geometry /tmp/pkg/hysafe/geometry && cp -r losses /tmp/pkg/hysafe/losses
export PYTHONPATH=/tmp/site:/tmp/pkg PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv | tee "$OUT/gpu.txt"
(cd /tmp && python3 -c "import hysafe, torch, open_clip, peft, geoopt, faiss; print('torch', torch.__version__, 'open_clip', open_clip.__version__, 'peft', peft.__version__)") \
    | tee -a "$OUT/gpu.txt" || exit 1
timeout "${TRAIN_TIMEOUT:-400}" python3 bench/train_throughput.py --model ViT-L-14 --device cuda --batch-sizes 128 64 32 \
    --precisions bf16 --naive-precisions bf16 fp32 --grad-checkpointing --compile inductor --in-process --steps 5 --warmup 2 \
    --deadline-s "${TRAIN_DEADLINE:-300}" --profile "$OUT/profile.txt" --out "$OUT/train.json" 2>&1 | tee "$OUT/train.log" | grep -v Warning
timeout "${COLLECTION_TIMEOUT:-120}" python3 bench/collection_throughput.py --plan gpu --device cuda --precision bf16 --workers 8 \
    --threads 16 --commands score --data /tmp/hysafe-collection --out "$OUT/collection.json" 2>&1 | tee "$OUT/collection.log" | tail -8
