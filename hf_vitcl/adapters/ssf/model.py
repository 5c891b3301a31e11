"""The SSF tuner: an `SSFLayer` on every targeted nn.Linear and nn.LayerNorm."""

from __future__ import annotations

from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from hf_vitcl.adapters.ssf.layer import SSFLayer
from hf_vitcl.errors import ConfigError


class SSFModel(BaseTuner):
    prefix = "ssf_"
    tuner_layer_cls = SSFLayer
    target_module_mapping: dict = {}

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, SSFLayer):
            target.update_layer(adapter_name, config.init_std)
            return
        if not isinstance(target, (nn.Linear, nn.LayerNorm)) or getattr(target, "weight", None) is None:
            raise ConfigError(
                f"target module '{current_key}' is a {type(target).__name__}; SSF adapts nn.Linear and "
                "affine nn.LayerNorm layers only: change target_modules"
            )
        new_module = SSFLayer(target, adapter_name, config.init_std)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)
