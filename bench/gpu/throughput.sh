#!/usr/bin/env bash
# P2P training-throughput check on one GPU: tokens/s with and without P2P, in the same run.
#
# Device (from the repo root, with the wheel bundle of shared/gpu/build_wheels.sh in ./.whl,
# named in the run's carry list):
#     bash bench/gpu/throughput.sh
# CPU dry run here (tiny shape, no install):
#     SMALL=1 SKIP_INSTALL=1 PY=.venv/bin/python bash bench/gpu/throughput.sh
#
# Builds in a scratch folder a random Qwen3-0.6B-shaped model, a BPE tokenizer and synthetic
# SST-2-like rows (bench/gpu/make_setup.py), then trains each arm in its own process through
# bench/gpu/train_arm.py (axolotl.cli.train in-process + measurement). Arms run interleaved
# (default: LoRA base, p2p, base, p2p, then full fine-tune base, p2p); an arm is skipped when
# the time budget BUDGET_S (seconds since start) would be exceeded. After every arm the
# summary is rewritten, so a killed run still returns what it measured.
# Output (in $OUT, else /tmp/p2p_gpu_out): gpu_throughput.json, gpu_throughput.md,
# versions.txt, setup.log, driver.log, logs.tar.gz (one log + one result json per arm).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RES="${OUT:-/tmp/p2p_gpu_out}"
mkdir -p "$RES"
exec > >(tee -a "$RES/driver.log") 2>&1
WORK="${WORK:-$(mktemp -d /tmp/p2pbench.XXXXXX)}"
mkdir -p "$WORK/logs"
PY="${PY:-python3}"
BUDGET_S="${BUDGET_S:-430}"
ARMS="${ARMS:-lora:base lora:p2p lora:base lora:p2p full:base full:p2p}"
START=$(date +%s)
echo "throughput.sh: repo $REPO, work $WORK, out $RES, budget ${BUDGET_S}s, arms: $ARMS"

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$REPO"/.whl/*.whl || { echo "bundle install failed"; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1 WANDB_MODE=disabled \
       TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TORCHAO_FORCE_SKIP_LOADING_SO_FILES="${TORCHAO_FORCE_SKIP_LOADING_SO_FILES:-1}"

"$PY" - <<'PY' > "$RES/versions.txt" 2>&1
import importlib.metadata as md, sys
print("python", sys.version.split()[0])
for d in ["torch", "triton", "transformers", "accelerate", "tokenizers", "peft", "trl", "datasets",
          "axolotl", "pydantic", "torchao", "numpy", "pyarrow", "flash_attn"]:
    try:
        v = md.version(d)
    except md.PackageNotFoundError:
        v = "-"
    print(f"{d:14} {v}")
import torch
print("cuda", torch.version.cuda, torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import p2p_plugin
print("p2p_plugin", getattr(p2p_plugin, "__version__", "?"), p2p_plugin.__file__)
PY
cat "$RES/versions.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader >> "$RES/versions.txt" 2>&1

cd "$WORK" || exit 1
"$PY" "$REPO/bench/gpu/make_setup.py" . > "$RES/setup.log" 2>&1 || { cat "$RES/setup.log"; echo "setup failed"; exit 1; }
tail -1 "$RES/setup.log"
echo "setup done at +$(( $(date +%s) - START ))s"

summarize() {
  "$PY" "$REPO/bench/gpu/summarize.py" "$WORK" "$RES" "$(( $(date +%s) - START ))" > /dev/null || echo "summarize failed"
  tar -czf "$RES/logs.tar.gz" -C "$WORK" logs setup.json lora_base.yml lora_p2p.yml full_base.yml full_p2p.yml 2>/dev/null
}

status=0
i=0
declare -A last_dur
prev=0
pair_skipped=0
specs=($ARMS)
for idx in "${!specs[@]}"; do
  spec="${specs[$idx]}"
  i=$((i + 1))
  kind="${spec%%:*}"; arm="${spec##*:}"
  name="$(printf '%02d' $i)_${kind}_${arm}"
  now=$(( $(date +%s) - START ))
  est="${last_dur[$kind]:-$prev}"
  # ARMS are taken as pairs (1-2, 3-4, ...): a pair starts only when both arms fit the budget,
  # and the second arm of a skipped pair is skipped too
  if [ $((idx % 2)) = 0 ]; then
    est=$(( est * 2 )); pair_skipped=0
  elif [ "$pair_skipped" = 1 ]; then
    est=$(( BUDGET_S * 10 ))
  fi
  if [ $(( now + est * 11 / 10 )) -gt "$BUDGET_S" ]; then
    pair_skipped=1
    echo "skip $name: +${now}s, estimated ${est}s more (pair) would pass the ${BUDGET_S}s budget"
    echo "{\"skipped\": true, \"kind\": \"$kind\", \"arm\": \"$arm\", \"reason\": \"time budget\"}" > "$WORK/logs/$name.json"
    continue
  fi
  t0=$(date +%s)
  "$PY" "$REPO/bench/gpu/train_arm.py" "${kind}_${arm}.yml" "$WORK/logs/$name.json" > "$WORK/logs/$name.log" 2>&1
  rc=$?
  dur=$(( $(date +%s) - t0 ))
  last_dur[$kind]=$dur; prev=$dur
  [ "$rc" = 0 ] || { status=1; echo "--- $name failed (rc $rc); log tail:"; tail -40 "$WORK/logs/$name.log"; }
  [ -f "$WORK/logs/$name.json" ] || echo "{\"error\": \"no result (rc $rc)\"}" > "$WORK/logs/$name.json"
  echo "$name: rc=$rc ${dur}s  $(grep '^ARM_RESULT' "$WORK/logs/$name.log" | cut -c1-400)"
  summarize
done
summarize
echo "total +$(( $(date +%s) - START ))s"
cat "$RES/gpu_throughput.md"
exit $status
