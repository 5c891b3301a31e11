"""The L2P layer (Wang et al., CVPR 2022, "Learning to Prompt for Continual Learning"; the authors' PyTorch
code, JH-LEE-KR/l2p-pytorch, which reproduces the paper).

A pool of M prompts P_m ∈ ℝ^{L×D} with keys k_m ∈ ℝ^D, both ~ U(−1, 1). For an image with query q:

    s_m = cos(q, k_m);   the top-N prompts by s (or the batch's N most frequent, `batchwise_selection`)
    input:  [CLS, P_{i_1} … P_{i_N}, patches], the prompts with the [CLS] position embedding
    head:   on the mean of the N·L prompt tokens' final-LayerNorm outputs ([CLS] excluded)
    surrogate loss: −Σ_b Σ_n cos(q_b, k_{i_{b,n}}) / B   (weighted by λ in the training loss)

The whole pool is shared by every task and trains throughout.
"""

from __future__ import annotations

import torch

from hf_vitcl.adapters.l2p.config import L2PConfig
from hf_vitcl.adapters.prompting import (
    PromptedViT,
    Prompts,
    batchwise_majority,
    cosine_similarity,
    uniform_parameter,
)


class L2PLayer(PromptedViT):
    adapter_layer_names = ("l2p_prompts", "l2p_keys")

    def create_prompts(self, adapter_name: str, config: L2PConfig) -> None:
        width = self.hidden_size
        self.l2p_prompts[adapter_name] = uniform_parameter(
            (config.pool_size, config.prompt_length, width), self.reference
        )
        self.l2p_keys[adapter_name] = uniform_parameter((config.pool_size, width), self.reference)

    def select(self, adapter_name: str, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen prompt ids (B, N) and the surrogate loss −Σ_b Σ_n cos(q_b, k_{i_{b,n}}) / B."""
        config = self.options[adapter_name]
        similarity = cosine_similarity(query, self.l2p_keys[adapter_name])
        chosen = similarity.topk(config.top_k, dim=1).indices
        if config.batchwise_selection:
            chosen = batchwise_majority(chosen, config.pool_size)
        return chosen, -similarity.gather(1, chosen).sum() / len(query)

    def prompts(self, adapter_name: str, query: torch.Tensor) -> Prompts:
        chosen, surrogate = self.select(adapter_name, query)
        self.auxiliary_loss = surrogate
        return Prompts(tokens=self.l2p_prompts[adapter_name][chosen].flatten(1, 2))

    def pool(self, adapter_name: str, output, prompts: Prompts):
        """Position 0 becomes the mean of the prompt tokens' outputs, which the classifier reads."""
        hidden = output.last_hidden_state
        count = prompts.tokens.shape[1]
        output.last_hidden_state = torch.cat(
            [hidden[:, 1 : 1 + count].mean(1, keepdim=True), hidden[:, 1:]], 1
        )
        return output
