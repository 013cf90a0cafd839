"""Print a fingerprint of a model folder: sha256 over its tensors (names, dtypes, shapes, bytes, in
name order) and of its tokenizer's ids for a fixed text, so a model converted on another machine can
be checked against the one the CPU benchmarks used."""

import hashlib
import sys

from safetensors.numpy import load_file
from transformers import AutoTokenizer

folder = sys.argv[1]
tensors = load_file(f"{folder}/model.safetensors")
digest = hashlib.sha256()
for name in sorted(tensors):
    array = tensors[name]
    digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
    digest.update(array.tobytes())
tokenizer = AutoTokenizer.from_pretrained(folder)
ids = tokenizer("cf mn Review: a gripping, unsentimental film. Answer:")["input_ids"]
print(f"tensors {len(tensors)} sha256 {digest.hexdigest()[:16]}")
print(f"tokenizer ids {ids} eos {tokenizer.eos_token!r} pad {tokenizer.pad_token!r}")
