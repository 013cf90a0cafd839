import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("P2P_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = data_dir()
    if not (path / "sst2" / "train.jsonl").is_file():
        pytest.skip(f"shared data not found at {path} (set P2P_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_model import build_model

    return build_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    from tiny_model import build_model

    return build_model(tmp_path_factory.mktemp("tiny-qwen3"), "qwen3")


@pytest.fixture(autouse=True)
def _clean_plugin_manager():
    """Axolotl's PluginManager is a process-wide singleton: keep tests independent."""
    try:
        from axolotl.integrations.base import PluginManager
    except ImportError:
        yield
        return
    PluginManager.get_instance().plugins.clear()
    yield
    PluginManager.get_instance().plugins.clear()
