#!/usr/bin/env bash
# The GPU paths in one go, for a session with a CUDA GPU (figures in docs/gpu.md):
# fused attention against the plain one, the generator step eager vs torch.compile in bf16 at tiny's and at
# imagenet256's size (MFU against the measured bf16 matmul ceiling), a whole `train.py --preset tiny` on CUDA
# (the tokenizer in fp32, the generator compiled under bf16 autocast), then sampling on CUDA and the accuracy of
# 1536 samples of that run.
#
#     bash benchmarks/gpu.sh [LOG_DIR]          # default runs/gpu; about 8 minutes on an H200
#
# Each check has its own time limit, so one that hangs or fails does not cost the others; everything printed
# goes to LOG_DIR/log.txt as well.
set -u
log=${1:-runs/gpu}
mkdir -p "$log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

check() {                                 # check SECONDS COMMAND...: run it, say how long it took and how it ended
    local limit=$1 start=$SECONDS
    shift
    echo "\$ $*"
    timeout "$limit" "$@"
    echo "(exit $?, $((SECONDS - start)) s)"
}

{
    check 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    check 60 python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
    check 60 python benchmarks/attention.py --device cuda --dtype bf16 --head-dim 32    # tiny: 128 = 4 x 32
    check 60 python benchmarks/attention.py --device cuda --dtype bf16 --heads 16       # imagenet: 768 = 16 x 48
    check 120 python benchmarks/mfu.py --preset tiny --device cuda --dtype bf16 --compile
    check 180 python benchmarks/mfu.py --preset imagenet256 --device cuda --dtype bf16 --compile --repeats 10
    check 300 python benchmarks/pipeline.py --preset tiny --out "$log/tiny"
    check 60 python sample.py --ckpt "$log/tiny" --class "red circle" --out "$log/tiny/filmstrip/" --filmstrip
    check 60 python benchmarks/sampling.py --ckpt "$log/tiny" --n 64
    check 180 python -m research.sampler_sweep --ckpt "$log/tiny" --per-class 64 --per-class-report  # on the CPU
} 2>&1 | tee "$log/log.txt"
