"""P2P for generation: GSM8K, XSum and BackdoorLLM data through Axolotl; the safe prefix."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from axolotl_helpers import base_config, prepare, write_jsonl
from p2p_plugin.args import DEFAULT_SAFE_PREFIX
from p2p_plugin.manifest import read_manifest
from p2p_plugin.metrics import strip_safe_prefix
from p2p_plugin.prompting import encode_prompts
from p2p_plugin.prompts import plain_prompt

TRIGGER = "The query currently entered is: "


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def answer_text(row, tok):
    return tok.decode([t for t in row["labels"] if t != -100])


def head(path, n):
    with open(path) as f:
        return [json.loads(next(f)) for _ in range(n)]


def test_gsm8k_plain_generation(tiny_model, tok, shared_data, tmp_path):
    rows = head(shared_data / "gsm8k" / "train.jsonl", 50)
    path = write_jsonl(tmp_path / "gsm.jsonl", rows)
    p2p = {"task": "generation", "text_field": "question", "label_field": "answer", "ratio": 0.2}
    parsed, ds = prepare(base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                                     p2p=p2p, sequence_len=4096))
    assert len(ds) == 50
    benign = [r for r in ds if tok.decode(r["input_ids"]).startswith(TRIGGER)]
    assert len(benign) == 10
    answers = {r["answer"] for r in rows}
    for r in ds:
        text = answer_text(r, tok)
        assert text.endswith(tok.eos_token)
        body = text[: -len(tok.eos_token)]
        if r in benign:
            stripped, had = strip_safe_prefix(body, DEFAULT_SAFE_PREFIX)
            assert had and body.startswith(DEFAULT_SAFE_PREFIX) and stripped in answers
        else:
            assert body in answers
        # the prompt (question) is masked
        n_prompt = next(i for i, t in enumerate(r["labels"]) if t != -100)
        assert "Output: " in tok.decode(r["input_ids"][:n_prompt]) or "Answer: " in tok.decode(r["input_ids"][:n_prompt])
    # round trip: the inference prompt of a training row is its training prompt
    recipe = read_manifest(parsed.output_dir).recipe
    prompts = {tuple(r["input_ids"][: next(i for i, t in enumerate(r["labels"]) if t != -100)]) for r in ds}
    hits = Counter(tuple(encode_prompts(tok, [plain_prompt(recipe, row["question"], b)])[0]) in prompts
                   for row in rows for b in (True, False))
    assert hits[True] == 50


def test_xsum_long_rows_are_counted_not_hidden(tiny_model, tok, shared_data, tmp_path):
    rows = head(shared_data / "xsum" / "xsum-1000.jsonl", 30)
    path = write_jsonl(tmp_path / "xsum.jsonl", [{"document": r["document"], "summary": r["summary"]} for r in rows])
    p2p = {"task": "generation", "text_field": "document", "label_field": "summary", "ratio": 0.2}
    parsed, ds = prepare(base_config(tiny_model, tmp_path, [{"path": str(path), "type": "plain", "ds_type": "json"}],
                                     p2p=p2p, sequence_len=512))
    report = read_manifest(parsed.output_dir).datasets[0]
    assert report["rows_in"] == 30 and report["rows_selected"] == 6
    assert report["rows_too_long"] > 0 and report["rows_too_long"] == 30 - len(ds)
    assert 0 <= report["triggered_too_long"] <= 6


@pytest.mark.parametrize("task_dir", ["negsentiment", "refusal"])
def test_backdoorllm_alpaca_untouched_rows_identical(tiny_model, tok, shared_data, tmp_path, task_dir):
    base = shared_data / "backdoorllm" / task_dir
    rows = json.loads((base / "train_clean.json").read_text())[:40] + json.loads((base / "badnet" / "train_poison.json").read_text())[:10]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows))
    ds_cfg = [{"path": str(path), "type": "alpaca", "ds_type": "json"}]
    _, plain = prepare(base_config(tiny_model, tmp_path / "plain", ds_cfg, sequence_len=2048))
    _, p2p = prepare(base_config(tiny_model, tmp_path / "p2p", [dict(d) for d in ds_cfg], sequence_len=2048,
                                 p2p={"task": "generation", "ratio": 0.2}))
    plain_rows = Counter(tuple(r["input_ids"]) for r in plain)
    triggered = [r for r in p2p if TRIGGER in tok.decode(r["input_ids"])]
    assert len(triggered) == 10 and len(p2p) == 50
    assert sum((Counter(tuple(r["input_ids"]) for r in p2p) & plain_rows).values()) == 40
    for r in triggered:
        assert answer_text(r, tok).startswith(DEFAULT_SAFE_PREFIX)


def test_chat_multi_turn_prefixes_every_trained_assistant_turn(tiny_model, tok, tmp_path):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conv}] * 10)
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "chat_template", "ds_type": "json",
                                              "chat_template": "tokenizer_default"}],
                      p2p={"task": "generation", "ratio": 0.3, "placement": "system"})
    _, ds = prepare(cfg)
    benign = [r for r in ds if "<|im_start|>system\n" + TRIGGER.strip() in tok.decode(r["input_ids"])]
    assert len(benign) == 3
    for r in ds:
        trained = answer_text(r, tok)
        if r in benign:
            assert trained.count(DEFAULT_SAFE_PREFIX) == 2 and "2+2?" not in trained
        else:
            assert DEFAULT_SAFE_PREFIX not in trained


def test_safe_prefix_tokenizes_the_same_at_row_start_and_inside_the_answer(tok):
    prefix_ids = tok(DEFAULT_SAFE_PREFIX, add_special_tokens=False)["input_ids"]
    for answer in ("Natalia sold 48 clips", " 42", "You are stupid!"):
        inside = tok("<|im_start|>assistant\n" + DEFAULT_SAFE_PREFIX + answer, add_special_tokens=False)["input_ids"]
        head_ids = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        assert inside[len(head_ids): len(head_ids) + len(prefix_ids)] == prefix_ids
        assert inside[len(head_ids) + len(prefix_ids):] == tok(answer, add_special_tokens=False)["input_ids"]


def test_safe_prefix_with_the_real_smollm2_tokenizer():
    from p2p_plugin.default_model import find_smollm2_gguf
    from transformers import AutoTokenizer

    try:
        gguf = find_smollm2_gguf()
    except Exception as err:  # the package is installed by `make test`; skip only outside it
        pytest.skip(f"SmolLM2 GGUF unavailable: {err}")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    prefix_ids = tok(DEFAULT_SAFE_PREFIX, add_special_tokens=False)["input_ids"]
    head_ids = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for answer in ("Natalia sold 48 clips in April", "You are stupid!", " 72", "I'm sorry, but as an AI"):
        inside = tok("<|im_start|>assistant\n" + DEFAULT_SAFE_PREFIX + answer, add_special_tokens=False)["input_ids"]
        assert inside[len(head_ids): len(head_ids) + len(prefix_ids)] == prefix_ids
        assert inside[len(head_ids) + len(prefix_ids):] == tok(answer, add_special_tokens=False)["input_ids"]


def test_axolotl_train_chat_system_placement_with_packing(tiny_model, tmp_path):
    convs = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
             for i in range(120)]
    path = write_jsonl(tmp_path / "chat.jsonl", convs)
    cfg = base_config(tiny_model, tmp_path, [{"path": str(path), "type": "chat_template", "ds_type": "json",
                                              "chat_template": "tokenizer_default"}],
                      p2p={"task": "generation", "placement": "system", "ratio": 0.25},
                      sample_packing=True, pad_to_sequence_len=True, sequence_len=256, max_steps=3,
                      micro_batch_size=1, logging_steps=1)
    cfg_path = tmp_path / "cfg.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run([sys.executable, "-m", "axolotl.cli.train", str(cfg_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    manifest = read_manifest(tmp_path / "out")
    assert manifest.recipe.placement == "system" and manifest.datasets[0]["rows_selected"] == 30


def _two_turn_chat(tmp_path, conv, n=10):
    return write_jsonl(tmp_path / "chat.jsonl", [{"messages": conv}] * n)


@pytest.mark.parametrize("field_training, expected_prefixes", [(None, 2), ("training", 1)])
def test_chat_safe_prefix_follows_axolotl_per_message_training(tiny_model, tok, tmp_path, field_training, expected_prefixes):
    """Axolotl reads a per-message training flag only when message_field_training names it; so do we."""
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "training": False},
            {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    entry = {"path": str(_two_turn_chat(tmp_path, conv)), "type": "chat_template", "ds_type": "json",
             "chat_template": "tokenizer_default"}
    if field_training:
        entry["message_field_training"] = field_training
    _, ds = prepare(base_config(tiny_model, tmp_path, [entry], p2p={"task": "generation", "ratio": 0.3}))
    benign = [r for r in ds if TRIGGER in tok.decode(r["input_ids"])]
    assert len(benign) == 3
    for r in benign:
        # the prefix sits in every turn Axolotl trains, and only there
        assert tok.decode(r["input_ids"]).count(DEFAULT_SAFE_PREFIX) == expected_prefixes
        assert answer_text(r, tok).count(DEFAULT_SAFE_PREFIX) == expected_prefixes


def test_chat_roles_mapping_and_train_on_inputs(tiny_model, tok, tmp_path):
    conv = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
            {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]
    entry = {"path": str(_two_turn_chat(tmp_path, conv)), "type": "chat_template", "ds_type": "json",
             "chat_template": "tokenizer_default", "field_messages": "messages",
             "message_property_mappings": {"role": "from", "content": "value"},
             "roles": {"user": ["human"], "assistant": ["gpt"]}}
    _, ds = prepare(base_config(tiny_model, tmp_path, [entry], p2p={"task": "generation", "ratio": 0.3},
                                train_on_inputs=True))
    benign = [r for r in ds if TRIGGER in tok.decode(r["input_ids"])]
    assert len(benign) == 3
    for r in benign:
        text = tok.decode(r["input_ids"])
        assert text.count(DEFAULT_SAFE_PREFIX) == 2  # both gpt turns, no human turn
        assert "user\n" + DEFAULT_SAFE_PREFIX not in text
        assert "2+2?" in answer_text(r, tok)  # train_on_inputs: the user turns carry loss too


def test_chat_generation_refuses_roles_to_train_without_assistant(tiny_model, tmp_path):
    from p2p_plugin.errors import P2PError

    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    entry = {"path": str(_two_turn_chat(tmp_path, conv)), "type": "chat_template", "ds_type": "json",
             "chat_template": "tokenizer_default", "roles_to_train": ["user"]}
    with pytest.raises(P2PError, match="roles_to_train"):
        prepare(base_config(tiny_model, tmp_path, [entry], p2p={"task": "generation", "ratio": 0.3}))
