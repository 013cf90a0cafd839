#!/usr/bin/env bash
# The defense matrix on a GPU machine without network, in two calls (the SmolLM2 GGUF, 98 MB, is
# over one call's 64 MiB, so it travels in two halves; see bench/gpu/README.md):
#   bash bench/gpu/defense_matrix.sh stage   # carry .whl .gpu1: installs the wheel bundle, keeps half 1 in /tmp
#   bash bench/gpu/defense_matrix.sh run     # carry .gpu2: joins the halves, converts the model, runs the matrix
# Prepare the carried folders here with: bash bench/gpu/prepare_defense_carry.sh
# Knobs: PY (python), OUT (results folder), SKIP_INSTALL=1, RESUME (an earlier defense_arms.tar.gz:
# its finished arms are reused; prepare_defense_carry.sh puts one in .gpu2 when bench/work/gpu exists), CALL_BUDGET (seconds for the run phase, default
# 560), and MATRIX_ARGS (extra arguments for
# defense_matrix.py, e.g. "--jobs 1,7 --workers 2 --extra --max-steps 2" for a dry run).
set -u
PHASE=${1:?usage: defense_matrix.sh stage|run}
PY=${PY:-python3}
OUT=${OUT:-/tmp/p2p_gpu_out}
STAGE=${STAGE:-/tmp/p2p_stage}
mkdir -p "$OUT" "$STAGE"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1 \
       TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 TOKENIZERS_PARALLELISM=false
case "$PHASE" in
stage)
  cp .gpu1/smollm2.gguf.part1 "$STAGE/" || exit 1
  if [ -z "${SKIP_INSTALL:-}" ]; then
    # the ROUGE-L set (p2p_plugin[eval]) apart: if it fails there, only the generation jobs stop (require_rouge)
    rouge="rouge_score absl_py nltk joblib regex click six"
    core=$(ls .whl/*.whl | grep -v -E "/($(echo $rouge | tr ' ' '|'))-")
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $core || exit 1
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        $(for w in $rouge; do ls .whl/$w-*.whl; done) || echo "the ROUGE-L wheels did not install: generation jobs will stop"
  fi
  ls -la "$STAGE"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  ;;
run)
  t_start=$(date +%s)
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  [ -f "$STAGE/smollm2.gguf.part1" ] || { echo "no $STAGE/smollm2.gguf.part1: run the stage phase first on this machine"; exit 3; }
  cat "$STAGE/smollm2.gguf.part1" .gpu2/smollm2.gguf.part2 > "$STAGE/smollm2.gguf"
  (cd "$STAGE" && sha256sum -c "$OLDPWD/.gpu2/smollm2.gguf.sha256") || exit 4
  MODEL="$STAGE/models/smollm2-135m-instruct"
  t0=$(date +%s)
  "$PY" -m p2p_plugin.default_model "$MODEL" --gguf "$STAGE/smollm2.gguf" > "$OUT/convert.log" 2>&1 || { tail -20 "$OUT/convert.log"; exit 5; }
  echo "model converted in $(( $(date +%s) - t0 )) s"
  "$PY" bench/gpu/model_fingerprint.py "$MODEL" | tee "$OUT/fingerprint.txt"
  echo "expected (converted on the CPU box):"; cat .gpu2/fingerprint.txt
  # the deadlines count from the start of this call: CALL_BUDGET (560 s) leaves the device call's
  # 600 s limit time for the last pack; no job starts in the last 100 s of it
  hard=$(( ${CALL_BUDGET:-560} - ($(date +%s) - t_start) ))
  # shellcheck disable=SC2086
  "$PY" bench/gpu/defense_matrix.py --model "$MODEL" --data-dir .gpu2/data --root "${ROOT:-/tmp/p2p_work}" \
      --out "$OUT" --hard-deadline "$hard" --soft-deadline "$((hard - 100))" \
      ${RESUME:+--resume "$RESUME"} ${MATRIX_ARGS:-} 2>&1 | tee "$OUT/matrix.log"
  ;;
*) echo "unknown phase $PHASE"; exit 2 ;;
esac
