#!/bin/sh
# Issue 13's GPU checks and figures, from a checkout, in two calls of the device tool
# (each under its 10-minute limit):
#   run(command="sh benchmarks/gpu.sh 1", carry=["data"], timeout_s=600)   # tests, epochs
#   run(command="sh benchmarks/gpu.sh 2", carry=["data"], timeout_s=600)   # full run, folders
#   run(command="sh benchmarks/gpu.sh 3", carry=["data"], timeout_s=600)   # sweep --jobs 1 and 3
# with Fashion-MNIST's four .gz files in data/fashion-mnist (git-ignored; `cp
# /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/`). Results go to $OUT (or
# /tmp/gpu): the GPU tests' output, then one JSON file per measurement. Each step is
# bounded so that its part fits in one call.
PART=${1:-1}
OUT=${OUT:-/tmp/gpu}
mkdir -p "$OUT"
export PYTHONPATH=src MOBILENET_FASHION_MNIST="${MOBILENET_FASHION_MNIST:-data/fashion-mnist}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python -c "import torch, timm; print(torch.__version__, timm.__version__)" >> "$OUT/gpu.txt" 2>&1
if [ "$PART" = 1 ]; then
# 1. the tests that need a GPU: no host sync in a step (CUDA's sync detector), loss falls, bf16, resume
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_device_data.py > "$OUT/tests.txt" 2>&1
# 2. an epoch of ours (second of two, 19,200 images) against timm's bare bf16 loop, batch 64 and 256
timeout 400 python benchmarks/train_throughput.py --device cuda --resolution 64 --batch-size 64 256 \
    --images 19200 --compile off on graphs > "$OUT/epochs.json" 2> "$OUT/epochs.err"
fi
if [ "$PART" = 2 ]; then
# 3. the default 50-epoch run's wall time at batch 256, eager and with CUDA graphs
timeout 420 python benchmarks/train_throughput.py --device cuda --resolution 64 --batch-size 256 \
    --images 2560 --compile off graphs --full-run > "$OUT/full_run.json" 2> "$OUT/full_run.err"
# 4. folders: JPEGs at 224×224, ours against DataLoader(ImageFolder), 8 workers
timeout 150 python benchmarks/train_throughput.py --device cuda --folder 2048 --workers 8 --prefetch 2 4 8 \
    --batch-size 256 > "$OUT/folder.json" 2> "$OUT/folder.err"
fi
if [ "$PART" = 3 ]; then
# 5. sweep --jobs on one GPU: four points of 2 epochs, one at a time, then three at once (wall seconds)
for J in 1 3; do
    rm -rf "/tmp/sweep-j$J"
    START=$(date +%s)
    timeout 280 python -m mobilenet sweep --widths 1,0.75 --resolutions 64,48 --epochs 2 --batch-size 256 \
        --device cuda --jobs "$J" --out "/tmp/sweep-j$J" > "$OUT/sweep-j$J.txt" 2>&1
    echo "{\"jobs\": $J, \"status\": $?, \"wall_seconds\": $(( $(date +%s) - START ))}" > "$OUT/sweep-j$J.json"
done
fi
tail -n 3 "$OUT/tests.txt"
cat "$OUT"/*.json
