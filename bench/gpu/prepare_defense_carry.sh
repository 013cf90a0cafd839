#!/usr/bin/env bash
# Fill the folders that defense_matrix.sh carries to the GPU machine (all git-ignored):
#   .whl   the axolotl wheel bundle (../shared/gpu/build_wheels.sh) + gguf (the model conversion reads the GGUF)
#   .gpu1  first half of SmolLM2's GGUF
#   .gpu2  second half, its sha256, the SST-2 and BackdoorLLM data, the CPU-side model fingerprint
set -eu
PY=${PY:-.venv/bin/python}
DATA=${P2P_DATA_DIR:-../shared/data}
for d in /.whl/ /.gpu1/ /.gpu2/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
[ -d .whl ] || bash ../shared/gpu/build_wheels.sh
ls .whl/gguf-*.whl >/dev/null 2>&1 || "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl gguf==0.19.0
# ROUGE-L for the generation arms (p2p_plugin[eval]): rouge-score is an sdist, built here into a py3 wheel; its
# needs (absl-py, six, nltk and its joblib/regex/click) as py3.12 x86-64 wheels. Not yet run on the device.
if ! ls .whl/rouge_score-*.whl >/dev/null 2>&1; then
  "$PY" -m pip wheel -q --no-deps -w .whl rouge-score==0.1.2
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
      absl-py==2.3.1 nltk==3.9.2 joblib==1.5.2 regex==2025.11.3 click==8.3.1 six==1.17.0
fi
GGUF=$("$PY" -c "from p2p_plugin.default_model import find_smollm2_gguf; print(find_smollm2_gguf())")
rm -rf .gpu1 .gpu2 && mkdir -p .gpu1 .gpu2/data/backdoorllm
half=$(( ($(stat -c %s "$GGUF") + 1) / 2 ))
head -c "$half" "$GGUF" > .gpu1/smollm2.gguf.part1
tail -c +"$((half + 1))" "$GGUF" > .gpu2/smollm2.gguf.part2
(cd "$(dirname "$GGUF")" && sha256sum "$(basename "$GGUF")") | sed 's/ .*/  smollm2.gguf/' > .gpu2/smollm2.gguf.sha256
cp -r "$DATA/sst2" .gpu2/data/
cp -r "$DATA/backdoorllm/negsentiment" "$DATA/backdoorllm/refusal" .gpu2/data/backdoorllm/
"$PY" bench/gpu/model_fingerprint.py models/smollm2-135m-instruct > .gpu2/fingerprint.txt
# the arms finished so far (bench/work/gpu, from earlier runs): the next run reuses them (RESUME=.gpu2/defense_arms.tar.gz)
[ -d bench/work/gpu ] && "$PY" bench/gpu/defense_matrix.py --pack-only --root bench/work/gpu --out .gpu2
du -sh .whl .gpu1 .gpu2
