"""A torch-only model and saver for the killed-writer test (the subprocess must start fast)."""

import torch

from peltc.compiler.torch.artifact import save_artifact


class _Cfg(dict):
    def to_dict(self):
        return dict(self)


class Small(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.config = _Cfg(model_type="toy", width=64)
        self.pelt_a = torch.nn.Linear(64, 64)
        self.pelt_b = torch.nn.Linear(64, 300)


def save(model, out):
    return save_artifact(model, out, ir_dict={"nodes": [], "edges": []}, spec_text="", spec_hash="h" * 64,
                         base_model="toy")
