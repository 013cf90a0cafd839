"""Test-only Axolotl plugin: lets Axolotl 0.19 run DDP on CPU processes (gloo).

With WORLD_SIZE > 1 Axolotl sets ``device_map = {"": LOCAL_RANK}`` (a CUDA index) even when no
accelerator exists, so model loading fails on CPU ("Cannot access accelerator device"). This
loads the model on the CPU instead. It is listed next to the P2P plugin only in the
multi-process test; the product does not need or ship it.
"""

from axolotl.integrations.base import BasePlugin


class CpuDdpPlugin(BasePlugin):
    def register(self, cfg):
        import torch
        from axolotl.loaders import model as model_loader

        if torch.cuda.is_available() or getattr(model_loader.ModelLoader, "_cpu_ddp_patched", False):
            return
        original = model_loader.ModelLoader._set_device_map_config

        def set_device_map_config(self):
            original(self)
            self.model_kwargs["device_map"] = "cpu"

        model_loader.ModelLoader._set_device_map_config = set_device_map_config
        model_loader.ModelLoader._cpu_ddp_patched = True
