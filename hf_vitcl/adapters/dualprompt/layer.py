"""The DualPrompt layer (Wang et al., ECCV 2022, "DualPrompt: Complementary Prompting for Rehearsal-free
Continual Learning"; the authors' PyTorch code, JH-LEE-KR/dualprompt-pytorch).

Prefix tuning. Each prompt holds a key prefix and a value prefix of its length; both ~ U(−1, 1):
- the G-prompt (one per block of `g_layers`) is shared by every task and trains throughout;
- the E-prompt of task t (one per block of `e_layers`), with its key k_t. Training task t uses E-prompt t
  (the task id is known in training), and the surrogate loss −Σ_b cos(q_b, k_t) / B trains its key; at test
  time image x takes E-prompt argmax_t cos(q(x), k_t). A new task's E-prompt starts as a copy of the previous
  task's (the authors' shared_prompt_pool), its key afresh. Earlier E-prompts and keys stay frozen.

Where this differs from the authors' code: the pool grows by one E-prompt per task, so a test image is matched
against the keys of the tasks seen (their pool of 10 also offers the untrained keys of future tasks; after the
last task of 10 the two agree). Their reshape of the E-prompt tensor, which mixes key and value halves across
a batch (dualprompt-pytorch#8), is not reproduced: the halves are split, not reshaped.
"""

from __future__ import annotations

import torch

from hf_vitcl.adapters.dualprompt.config import DualPromptConfig
from hf_vitcl.adapters.prompting import (
    PromptedViT,
    Prompts,
    batchwise_majority,
    cosine_similarity,
    uniform_parameter,
)


class DualPromptLayer(PromptedViT):
    adapter_layer_names = ("dualprompt_g", "dualprompt_e", "dualprompt_keys")

    def create_prompts(self, adapter_name: str, config: DualPromptConfig) -> None:
        width, tasks = self.hidden_size, config.num_tasks
        self.dualprompt_g[adapter_name] = uniform_parameter(
            (len(config.g_layers), 2, config.g_length, width), self.reference
        )
        self.dualprompt_e[adapter_name] = uniform_parameter(
            (tasks, len(config.e_layers), 2, config.e_length, width), self.reference
        )
        self.dualprompt_keys[adapter_name] = uniform_parameter((tasks, width), self.reference)

    def add_task(self, adapter_name: str) -> None:
        """E-prompt t starts as a copy of E-prompt t − 1; its key ~ U(−1, 1)."""
        super().add_task(adapter_name)
        prompts, keys = self.dualprompt_e[adapter_name], self.dualprompt_keys[adapter_name]
        new_key = uniform_parameter((1, keys.shape[1]), keys)
        with torch.no_grad():
            self.dualprompt_e[adapter_name] = torch.nn.Parameter(torch.cat([prompts, prompts[-1:]]))
            self.dualprompt_keys[adapter_name] = torch.nn.Parameter(torch.cat([keys, new_key]))

    def select(self, adapter_name: str, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The E-prompt of each image (B,) and the surrogate loss −Σ_b cos(q_b, k_{i_b}) / B: in training the
        task being learned, else the best-matching key."""
        similarity = cosine_similarity(query, self.dualprompt_keys[adapter_name])
        if self.training:
            chosen = torch.full((len(query),), self.num_tasks[adapter_name] - 1, device=query.device)
        else:
            chosen = similarity.argmax(dim=1)
            if self.options[adapter_name].batchwise_selection:
                chosen = batchwise_majority(chosen[:, None], similarity.shape[1])[:, 0]
        return chosen, -similarity.gather(1, chosen[:, None]).sum() / len(query)

    def prompts(self, adapter_name: str, query: torch.Tensor) -> Prompts:
        config = self.options[adapter_name]
        chosen, surrogate = self.select(adapter_name, query)
        self.auxiliary_loss = surrogate
        batch = len(query)
        prefixes = {}
        for block, (key, value) in zip(config.g_layers, self.dualprompt_g[adapter_name], strict=True):
            prefixes[block] = (key.expand(batch, -1, -1), value.expand(batch, -1, -1))
        chosen_prompts = self.dualprompt_e[adapter_name][chosen]  # (B, blocks, 2, L, D)
        for index, block in enumerate(config.e_layers):
            prefixes[block] = (chosen_prompts[:, index, 0], chosen_prompts[:, index, 1])
        return Prompts(prefixes=prefixes)

    def frozen_rows(self, adapter_name: str) -> dict[torch.nn.Parameter, torch.Tensor]:
        """The E-prompts and keys of earlier tasks."""
        rows = {}
        for parameter in (self.dualprompt_e[adapter_name], self.dualprompt_keys[adapter_name]):
            scale = torch.zeros((len(parameter),) + (1,) * (parameter.dim() - 1), device=parameter.device)
            scale[-1] = 1
            rows[parameter] = scale
        return rows
