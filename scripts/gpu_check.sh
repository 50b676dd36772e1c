#!/usr/bin/env bash
# One-shot check of the GPU backends on a rented NVIDIA machine (CUDA driver for 12.8,
# Vulkan driver for wgpu, internet for PyPI): builds with tch (CUDA) and wgpu, runs the
# parity suite on the GPU with each, a short CLEX training run on tch, and a decode timing
# with the trained model, then prints one summary table.
#
# Budget: under 8 minutes on a 16-core GPU box (torch download ~1 min, tch build ~2 min,
# wgpu build ~3 min, tests and training ~1 min). Logs go to target/gpu-check/.
#
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=target/gpu-check
mkdir -p "$LOG"
declare -a ROWS

step() { # name, command...
    local name=$1; shift
    local t0=$SECONDS
    if "$@" >"$LOG/$name.log" 2>&1; then status=ok; else status=FAILED; fi
    ROWS+=("$(printf '%-28s %-7s %5ss   %s' "$name" "$status" $((SECONDS - t0)) "$(grep -hE "$PATTERN" "$LOG/$name.log" | tail -n 3 | tr '\n' ' ' | cut -c1-150)")")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$LOG/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$LOG/gpu.txt"

PATTERN='already installed|Successfully installed'
step setup-tch cargo xtask setup-tch

# Parity suite (f32, f16, bf16 logits vs goldens; decode; 4 CLEX train steps vs flex) on
# CUDA device 0 through libtorch.
PATTERN='test result|Cuda'
step parity-tch cargo xtask test-tch

# The same suite on wgpu's default adapter (the GPU when a Vulkan driver is present).
PATTERN='test result|wgpu f32'
step parity-wgpu env CLEX_REQUIRE_WGPU=1 cargo test --release -p clex-parity --test wgpu -- --nocapture

# A short CLEX training run on tch (CUDA), then decode speed of the result.
PATTERN='length|trained'
step train-tch cargo xtask train --backend tch --name gpu-check --steps 100 --checkpoint-every 50 --plain
# The same with bf16 compute (f32 master weights and ODE), the GPU's fast path.
step train-tch-bf16 cargo xtask train --backend tch --dtype bf16 --name gpu-check-bf16 --steps 50 --checkpoint-every 50 --plain
PATTERN='tokens/s'
step decode-tch bash -c 'source <(cargo run -q -p xtask -- setup-tch | grep "^  export" | sed "s/^  //"); cargo run --release -q -p clex-cli --no-default-features --features tch -- generate -m runs/gpu-check/model -p "ROMEO:" -n 256'
PATTERN='tokens/s'
step decode-wgpu cargo run --release -q -p clex-cli --no-default-features --features wgpu -- generate -m runs/gpu-check/model -p "ROMEO:" -n 256

echo
echo "GPU: $(cat "$LOG/gpu.txt")"
printf '%-28s %-7s %6s   %s\n' check status time "key lines (full logs in $LOG/)"
for r in "${ROWS[@]}"; do echo "$r"; done
! printf '%s\n' "${ROWS[@]}" | grep -q FAILED
