#!/usr/bin/env bash
# One prepared GPU check (issue 15), about 8 minutes on one GPU; written without a GPU to test
# it on, so untested there until a session runs it. Figures and logs go to $OUT (default
# runs/gpu_check):
#   1. the CUDA tests (streamed = in memory on CUDA, no host sync in an AMP step, encodings);
#   2. bench/gpu_bench.py: pre-training and fine-tuning throughput (fp32 and bf16 autocast, in
#      memory and streamed), evaluation times, peak GPU memory, host-sync check -> gpu_bench.json;
#   3. torchrun + NCCL on one GPU: DDP and the gradient all-gather (bench/gpu_bench.py --nccl);
#   4. torchrun -m train pretrain from a float16 feature store on disk (the CLI path: device
#      selection, AMP, streaming, checkpoints).
# Each part has its own time limit; a failing part is recorded and the next one still runs.
#     OUT=/tmp/out bash bench/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_check}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
failed=0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

part() {  # part NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    echo "== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc, $((SECONDS - started)) s" | tee -a "$SUMMARY"
    tail -n 25 "$OUT/$name.log"
    [ "$rc" -eq 0 ] || failed=1
}

{ nvidia-smi; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'device', torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"; } \
    > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt" | tail -n 3

part cuda_tests 150 python -m pytest -q -p no:cacheprovider -rs \
    tests/train/test_cuda.py tests/csp/test_encodings.py::test_runs_on_cuda
part throughput 210 python bench/gpu_bench.py --out "$OUT/gpu_bench.json"
part nccl 90 torchrun --standalone --nproc_per_node 1 bench/gpu_bench.py --nccl --out "$OUT/nccl.json"

STORE="$OUT/tmp/store"
rm -rf "$OUT/tmp"
part cli_pretrain 120 bash -c "
python - <<'PY' &&
import torch
from csp.features import write_store
from csp.samplers import sample_sphere
g = torch.Generator().manual_seed(0)
n = 131072
write_store('$STORE', sample_sphere(n, generator=g).numpy(),
            torch.randn(n, 2048, generator=g).half().numpy(), 'synthetic-2048')
PY
torchrun --standalone --nproc_per_node 1 -m train pretrain --preset csp-mc-bld \
    --features '$STORE' --out '$OUT/tmp/run' --set image_encoder=synthetic-2048 \
    --set optim.epochs=2 --set optim.batch_size=4096 --set runtime.progress=false &&
python -c \"import json; [print(json.loads(l)['pairs_per_second']) for l in open('$OUT/tmp/run/metrics.jsonl')]\"
"
cp "$OUT/tmp/run/metrics.jsonl" "$OUT/cli_pretrain_metrics.jsonl" 2>/dev/null
rm -rf "$OUT/tmp"

echo "== summary"
cat "$SUMMARY"
exit "$failed"
