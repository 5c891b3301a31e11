"""An L2 penalty towards the weights after the previous task: the README's worked example of a new method."""

from dataclasses import dataclass, field

import torch

from hf_vitcl import ContinualTrainer, MethodConfig, register_method


@dataclass
class L2PreviousConfig(MethodConfig):
    lamb: float = field(default=1.0, metadata={"help": "Weight λ of the penalty."})


@register_method
class L2PreviousTrainer(ContinualTrainer):
    """loss = CE + λ Σ (θ − θ*)², θ* the backbone's weights after the previous task (the head is free)."""

    method_name = "l2_previous"
    config_class = L2PreviousConfig
    carried_state = ("anchor",)  # saved after every task, restored on --resume

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchor: dict[str, torch.Tensor] = {}  # θ*, by parameter name

    def backbone(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if not n.startswith("classifier.")}

    def end_task(self, task):
        self.anchor = {name: param.detach().clone() for name, param in self.backbone().items()}

    def extra_loss(self, model, inputs, outputs):
        if not self.anchor:  # the first task
            return None
        backbone = self.backbone()
        penalty = sum((backbone[name] - anchor).pow(2).sum() for name, anchor in self.anchor.items())
        return self.method_config.lamb * penalty
