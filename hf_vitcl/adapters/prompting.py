"""What L2P, DualPrompt and CODA-Prompt share: prompts chosen per image by a query, on a frozen ViT.

Each is a PEFT method in PEFT's layout (config, layer, model) on two modules of a transformers
`ViTForImageClassification`: `vit`, wrapped by the method's `PromptedViT` layer, and `classifier`, wrapped by
a `PromptHead` (per adapter, one linear head over every class seen, grown task by task). One adapter holds
everything the model learned, so the adapter saved after task t is the whole model after task t, on its
frozen base.

A forward of the wrapped ViT:
1. the query q = the final-LayerNorm [CLS] of the same ViT without prompts (the frozen pretrained model f0),
   under no_grad and in eval mode: one extra forward, no second copy of the backbone;
2. the method turns q into prompts: tokens inserted after [CLS] at the input (prompt tuning, L2P) and key and
   value prefixes of chosen blocks (prefix tuning, DualPrompt and CODA-Prompt);
3. the prompted forward. Tokens enter through a forward hook on the embeddings, with the [CLS] position
   embedding. Prefixes enter through the attention function registered as `PREFIX_IMPLEMENTATION`, which the
   model runs on for this forward only:

       softmax(Q [K_p; K]ᵀ · scale) [V_p; V]        K_p, V_p: (B, H, L_p, d), the queries unchanged

   after which the implementation the model ran before (sdpa by default) computes the attention;
4. the head reads position 0 of the final LayerNorm's output: the [CLS], or what the method pools there
   (L2P: the mean of its prompt tokens' outputs).

After a training forward, `layer.auxiliary_loss` is the method's extra term (unweighted): the surrogate loss
−Σ_b Σ_n cos(q_b, k_n) / B of L2P and DualPrompt, or CODA-Prompt's orthogonality penalty. `layer.frozen_rows`
names what the task being learned must leave bit-identical (the trainer scales their optimizer step by 0).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from peft import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.vit.modeling_vit import ViTModel

from hf_vitcl.attention.recorder import eager_attention
from hf_vitcl.errors import ConfigError
from hf_vitcl.models import grown_linear

PREFIX_IMPLEMENTATION = "hf_vitcl_prefix"
PROMPT_TARGETS = ("vit", "classifier")

# attention module -> (key prefix, value prefix, the implementation to delegate to), during a prompted forward
_PREFIXES: WeakKeyDictionary[nn.Module, tuple[torch.Tensor | None, torch.Tensor | None, str]] = (
    WeakKeyDictionary()
)


def prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The registered attention function: the block's key and value prefixes (B, H, L_p, d) go in front of its
    keys and values (every query attends to them), then the model's previous implementation attends."""
    key_prefix, value_prefix, previous = _PREFIXES.get(module, (None, None, "sdpa"))
    if key_prefix is not None:
        key = torch.cat([key_prefix.to(key.dtype), key], dim=2)
        value = torch.cat([value_prefix.to(value.dtype), value], dim=2)
        if attention_mask is not None:
            attention_mask = F.pad(attention_mask, (key_prefix.shape[2], 0))
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(previous, eager_attention)
    return attend(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


AttentionInterface.register(PREFIX_IMPLEMENTATION, prefix_attention)
AttentionMaskInterface.register(PREFIX_IMPLEMENTATION, eager_mask)


def split_heads(prefix: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, H, L, D / H), the layout of keys and values in the attention function."""
    batch, length, width = prefix.shape
    return prefix.view(batch, length, num_heads, width // num_heads).transpose(1, 2)


@dataclass
class Prompts:
    """What a method gives the prompted forward: `tokens` (B, L, D) inserted after [CLS], and per block index
    a (key prefix, value prefix) pair, each (B, L_p, D)."""

    tokens: torch.Tensor | None = None
    prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@contextmanager
def prompted(vit: ViTModel, prompts: Prompts):
    """`vit` runs with `prompts` inside the block: a hook on the embeddings inserts the tokens (with the [CLS]
    position embedding), and the prefix attention function adds the prefixes."""
    hooks = []
    if prompts.tokens is not None:

        def insert_tokens(module, args, output):
            tokens = prompts.tokens + module.position_embeddings[:, :1]
            return torch.cat([output[:, :1], tokens.to(output.dtype), output[:, 1:]], dim=1)

        hooks.append(vit.embeddings.register_forward_hook(insert_tokens))
    previous = vit.config._attn_implementation
    heads = vit.config.num_attention_heads
    if prompts.prefixes:
        for index, layer in enumerate(vit.layers):
            key, value = prompts.prefixes.get(index, (None, None))
            if key is not None:
                key, value = split_heads(key, heads), split_heads(value, heads)
            _PREFIXES[layer.attention] = (key, value, previous)
        vit.set_attn_implementation(PREFIX_IMPLEMENTATION)
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        if prompts.prefixes:
            vit.set_attn_implementation(previous)
            for layer in vit.layers:
                _PREFIXES.pop(layer.attention, None)


def cosine_similarity(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """cos(q_b, k_m) for every query and key: (B, D) × (M, D) -> (B, M)."""
    return F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T


def batchwise_majority(chosen: torch.Tensor, pool_size: int) -> torch.Tensor:
    """The batch-wise selection of the authors' PyTorch code: the N ids chosen most often over the batch
    (ties: the lower id), for every image of the batch. `chosen`: (B, N) ids."""
    counts = torch.bincount(chosen.flatten(), minlength=pool_size)
    majority = torch.argsort(counts, descending=True, stable=True)[: chosen.shape[1]]
    return majority.expand(chosen.shape[0], -1)


@dataclass
class PromptConfig(PeftConfig):
    """The head and the tasks every prompt method's adapter records, and the modules it wraps."""

    target_modules: list[str] | None = field(
        default_factory=lambda: list(PROMPT_TARGETS),
        metadata={
            "help": "The wrapped modules: the ViTModel and the classifier of a ViTForImageClassification."
        },
    )
    num_classes: int | None = field(default=None, metadata={"help": "Outputs of the head: the classes seen."})
    id2label: dict[str, str] | None = field(default=None, metadata={"help": "Names of the head's classes."})
    num_tasks: int = field(
        default=1, metadata={"help": "Tasks learned (the last one is the one that trains)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.num_classes is None or self.num_classes < 1:
            raise ConfigError(f"num_classes={self.num_classes}: the head needs the number of classes seen")
        if self.num_tasks < 1:
            raise ConfigError(f"num_tasks={self.num_tasks} must be at least 1")

    def check_fits(self, model_config, num_tasks: int | None = None) -> None:
        """Refuse, naming the option, a model these prompts cannot go into, over `num_tasks` tasks (default:
        those learned); checked before the model is wrapped."""
        model_type = getattr(model_config, "model_type", None)
        if model_type != "vit":
            raise ConfigError(
                f"model: {self.peft_type} prompts a ViT (model type 'vit'), not a '{model_type}' model: its "
                "prompts go before a global [CLS] token's attention, which Swin's windows do not have"
            )

    @staticmethod
    def check_blocks(name: str, blocks: list[int], model_config) -> None:
        depth = model_config.num_hidden_layers
        if any(not 0 <= block < depth for block in blocks) or len(set(blocks)) != len(blocks):
            raise ConfigError(
                f"{name}={list(blocks)}: distinct block indices in 0..{depth - 1} needed, the model has "
                f"{depth} blocks"
            )


def uniform_parameter(shape: tuple[int, ...], reference: torch.Tensor) -> nn.Parameter:
    """A parameter ~ U(−1, 1), the authors' initialisation of prompts and keys, on `reference`'s device."""
    return nn.Parameter(torch.empty(shape, device=reference.device, dtype=reference.dtype).uniform_(-1, 1))


class PromptedViT(nn.Module, BaseTunerLayer):
    """A transformers `ViTModel` whose forward is prompted by the active adapter (module docstring).

    A method names its parameter dicts in `adapter_layer_names` and implements `create_prompts(adapter,
    config)`, `add_task(adapter)` (the parameters of one more task), `prompts(adapter, query)` (which also
    sets `auxiliary_loss` in training), and where it needs to `pool` and `frozen_rows`."""

    def __init__(self, base_layer: ViTModel, adapter_name: str, config: PromptConfig):
        super().__init__()
        self.base_layer = base_layer
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ParameterDict())
        self.options: dict[str, PromptConfig] = {}
        self.num_tasks: dict[str, int] = {}
        self.auxiliary_loss: torch.Tensor | None = None
        self.merged_adapters = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    @property
    def hidden_size(self) -> int:
        return self.base_layer.config.hidden_size

    @property
    def reference(self) -> torch.Tensor:
        """A base weight: new parameters take its device and dtype."""
        return self.base_layer.embeddings.patch_embeddings.projection.weight

    def update_layer(self, adapter_name: str, config: PromptConfig) -> None:
        self.options[adapter_name] = config
        self.num_tasks[adapter_name] = config.num_tasks
        self.create_prompts(adapter_name, config)
        self.set_adapter(self.active_adapters)

    # what a method defines

    def create_prompts(self, adapter_name: str, config: PromptConfig) -> None:
        raise NotImplementedError

    def add_task(self, adapter_name: str) -> None:
        """Before a new task: its parameters (for a method that adds some per task)."""
        self.num_tasks[adapter_name] += 1

    def prompts(self, adapter_name: str, query: torch.Tensor) -> Prompts:
        raise NotImplementedError

    def pool(self, adapter_name: str, output, prompts: Prompts):
        """The output whose position 0 the head reads (the [CLS] here)."""
        return output

    def frozen_rows(self, adapter_name: str) -> dict[nn.Parameter, torch.Tensor]:
        """{parameter: ρ}, ρ = 0 on the entries the task being learned must not change, 1 elsewhere."""
        return {}

    # shared behaviour

    def active_prompt_adapter(self) -> str | None:
        if self.disable_adapters:
            return None
        active = [name for name in self.active_adapters if name in self.options]
        if len(active) > 1:
            raise ValueError(f"adapters {active} are active together; prompt adapters are used one at a time")
        return active[0] if active else None

    @torch.no_grad()
    def query(self, pixel_values: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """q(x): the final-LayerNorm [CLS] of the unprompted frozen ViT, in eval mode, without gradient."""
        training = self.base_layer.training
        self.base_layer.eval()
        try:
            return self.base_layer(pixel_values, *args, **kwargs).last_hidden_state[:, 0]
        finally:
            self.base_layer.train(training)

    def forward(self, pixel_values: torch.Tensor, *args, **kwargs):
        adapter_name = self.active_prompt_adapter()
        if adapter_name is None:
            return self.base_layer(pixel_values, *args, **kwargs)
        query = self.query(pixel_values, *args, **kwargs)
        self.auxiliary_loss = None
        prompts = self.prompts(adapter_name, query)
        with prompted(self.base_layer, prompts):
            output = self.base_layer(pixel_values, *args, **kwargs)
        return self.pool(adapter_name, output, prompts)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError("prompts depend on each image's query: they cannot be merged into the weights")

    def unmerge(self) -> None:
        pass


class PromptHead(nn.Module, BaseTunerLayer):
    """The classifier: per adapter, one linear head over every class seen, grown task by task."""

    def __init__(self, base_layer: nn.Linear, adapter_name: str, config: PromptConfig, prefix: str):
        super().__init__()
        self.base_layer = base_layer
        self.adapter_layer_names = (f"{prefix}head",)
        setattr(self, self.adapter_layer_names[0], nn.ModuleDict())
        self.merged_adapters = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    @property
    def heads(self) -> nn.ModuleDict:
        return getattr(self, self.adapter_layer_names[0])

    def update_layer(self, adapter_name: str, config: PromptConfig) -> None:
        base = self.base_layer
        self.heads[adapter_name] = nn.Linear(
            base.in_features, config.num_classes, device=base.weight.device, dtype=base.weight.dtype
        )
        self.set_adapter(self.active_adapters)

    def grow(self, adapter_name: str, num_classes: int, seed: int, std: float) -> None:
        """The head over `num_classes`, its rows so far kept, new rows ~ N(0, std²) seeded by `seed`."""
        head = self.heads[adapter_name]
        self.heads[adapter_name] = grown_linear(
            head, num_classes, head.in_features, head.out_features, seed, std
        )

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        active = [] if self.disable_adapters else [a for a in self.active_adapters if a in self.heads]
        if not active:
            return self.base_layer(x, *args, **kwargs)
        return self.heads[active[0]](x)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError("a prompt adapter's head is not merged: load the adapter with PEFT")

    def unmerge(self) -> None:
        pass


class PromptTuner(BaseTuner):
    """The tuner of a prompt method: its `PromptedViT` on `vit`, a `PromptHead` on `classifier`."""

    target_module_mapping: dict = {}

    @staticmethod
    def _check_target_module_exists(config: PromptConfig, key: str) -> bool:
        return key in config.target_modules

    def _prepare_adapter_config(self, peft_config: PromptConfig, model_config: dict) -> PromptConfig:
        peft_config.check_fits(self.model.config)
        return peft_config

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, (self.tuner_layer_cls, PromptHead)):
            target.update_layer(adapter_name, config)
            return
        if isinstance(target, ViTModel):
            new_module = self.tuner_layer_cls(target, adapter_name, config)
        elif isinstance(target, nn.Linear):
            new_module = PromptHead(target, adapter_name, config, self.prefix)
        else:
            raise ConfigError(
                f"target module '{current_key}' is a {type(target).__name__}; {config.peft_type} wraps a "
                "ViTModel and a linear classifier"
            )
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)


def prompt_layers(model: nn.Module) -> tuple[PromptedViT, PromptHead]:
    """The prompted ViT and the head of a model with a prompt adapter."""
    vit = [module for module in model.modules() if isinstance(module, PromptedViT)]
    heads = [module for module in model.modules() if isinstance(module, PromptHead)]
    if len(vit) != 1 or len(heads) != 1:
        raise ValueError(f"{type(model).__name__} holds no prompt adapter (or more than one prompted ViT)")
    return vit[0], heads[0]
