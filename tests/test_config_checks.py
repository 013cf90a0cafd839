"""register()-time checks on raw config dicts (no Axolotl needed)."""

import json

import pytest

from p2p_plugin.config_checks import PLUGIN_NAME, prepare_config
from p2p_plugin.errors import P2PError


def raw(tmp_path, **kw):
    cfg = {"plugins": [PLUGIN_NAME], "p2p": {"labels": ["0", "1"]},
           "datasets": [{"path": str(tmp_path / "d.jsonl"), "type": "plain"}]}
    cfg.update(kw)
    return cfg


def test_wraps_types_and_salts_prepared_path_idempotently(tmp_path):
    cfg = raw(tmp_path, dataset_prepared_path="prep")
    prepare_config(cfg)
    assert cfg["datasets"][0]["type"] == "p2p_plugin.types.plain"
    first = cfg["dataset_prepared_path"]
    assert first.startswith("prep/p2p-")
    prepare_config(cfg)  # idempotent: same salt, not salted twice
    assert cfg["dataset_prepared_path"] == first and cfg["datasets"][0]["type"] == "p2p_plugin.types.plain"


def test_default_prepared_path_is_salted_too(tmp_path):
    cfg = raw(tmp_path)
    prepare_config(cfg)
    assert cfg["dataset_prepared_path"].startswith("last_run_prepared/p2p-")


@pytest.mark.parametrize("change", [
    {"ratio": 0.3}, {"seed": 1}, {"trigger": "Q: "}, {"mode": "augment"}, {"cue": "Label: "},
    {"placement": "suffix"}, {"safe_labels": ["5", "6"]}, {"enabled": False},
])
def test_every_setting_changes_the_salt(tmp_path, change):
    a, b = raw(tmp_path), raw(tmp_path)
    b["p2p"] = {**b["p2p"], **change}
    prepare_config(a)
    prepare_config(b)
    assert a["dataset_prepared_path"] != b["dataset_prepared_path"]


def test_plugin_version_changes_the_salt(tmp_path, monkeypatch):
    import p2p_plugin.config_checks as cc

    a, b = raw(tmp_path), raw(tmp_path)
    prepare_config(a)
    monkeypatch.setattr(cc, "__version__", "999")
    prepare_config(b)
    assert a["dataset_prepared_path"] != b["dataset_prepared_path"]


def test_plugin_code_changes_the_salt(tmp_path, monkeypatch):
    """A fixed selection rule under the same settings and version must not reuse rows the old rule wrote."""
    import p2p_plugin.config_checks as cc

    assert cc.code_digest() == cc.code_digest() and len(cc.code_digest()) == 64
    a, b = raw(tmp_path), raw(tmp_path)
    prepare_config(a)
    monkeypatch.setattr(cc, "code_digest", lambda: "another build")
    prepare_config(b)
    assert a["dataset_prepared_path"] != b["dataset_prepared_path"]


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c.pop("p2p"), "no `p2p:` block"),
    (lambda c: c.update(rl="dpo"), "rl: dpo"),
    (lambda c: c.update(streaming=True), "streaming"),
    (lambda c: c.update(skip_prepare_dataset=True), "skip_prepare_dataset"),
    (lambda c: c["datasets"][0].update(type={"field_instruction": "x"}), r"datasets\[0\].*dict `type:`"),
    (lambda c: c["datasets"][0].update(type="sharegpt"), r"type: sharegpt.*not supported"),
    (lambda c: c.update(datasets=[]), "no `datasets:`"),
    (lambda c: c["p2p"].update(ratio=1.5), r"p2p.ratio"),
    (lambda c: c["p2p"].update(ratoi=0.1), r"p2p.ratoi: Extra inputs"),
    (lambda c: c["p2p"].pop("labels"), "p2p.labels is required"),
    (lambda c: c["p2p"].update(labels=["neg", "pos"]), "safe_labels"),
    (lambda c: c["p2p"].update(selection="oracle"), "unknown selection strategy"),
])
def test_loud_failures(tmp_path, mutate, message):
    cfg = raw(tmp_path)
    mutate(cfg)
    with pytest.raises(P2PError, match=message):
        prepare_config(cfg)


def test_pretokenized_local_data_is_refused(tmp_path):
    path = tmp_path / "tok.jsonl"
    path.write_text(json.dumps({"input_ids": [1], "attention_mask": [1], "labels": [1]}) + "\n")
    cfg = raw(tmp_path, datasets=[{"path": str(path), "type": "plain"}])
    with pytest.raises(P2PError, match="already tokenized"):
        prepare_config(cfg)
