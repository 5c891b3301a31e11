"""What Piggyback, RKR and Mask-RKR share: one adapter per task, with its own classification head.

Each method is a PEFT tuner in PEFT's layout (config, layer, model) built on the three classes here:

- `TaskAdapterConfig`: the targets (every linear layer of the encoder by default) and the task head
  (`head_module`, replaced per adapter by a head of `num_classes` outputs);
- `TaskAdapterLinear`: wraps an `nn.Linear`. For an encoder layer, the method defines its adapted
  forward and the merged weight; for the head module, every adapter has its own `nn.Linear`. One adapter
  is active at a time: a task-incremental model is evaluated with the adapter of the task it is given;
- `TaskAdapterModel`: the `BaseTuner`; it saves binary masks packed, one bit per entry, and checks on load
  that the adapter fits the base model.

`register_adapter_method` makes a method known to PEFT (`get_peft_model`, `PeftModel.from_pretrained`,
...): PEFT 0.21's `register_peft_method` only accepts names of its closed `PeftType` enum, so the three
mappings are written with a string key (`PeftType` is a str enum, so the string compares equal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from peft import PeftConfig
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import (
    BaseTuner,
    BaseTunerLayer,
    check_adapters_to_merge,
    check_target_module_exists,
)
from torch import nn

from hf_vitcl.errors import ConfigError

# The linear layers of a transformers 5 ViT or Swin block: attention projections and both MLP layers.
ENCODER_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")
PACKED_SUFFIX = "_packed"


@dataclass
class TaskAdapterConfig(PeftConfig):
    """Targets and task head shared by the task-incremental adapters."""

    target_modules: list[str] | str | None = field(
        default_factory=lambda: list(ENCODER_LINEAR_LAYERS),
        metadata={"help": "Linear layers to adapt: names (suffix match) or a regex (full match)."},
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Layers not to adapt, matched like target_modules."}
    )
    head_module: str | None = field(
        default="classifier",
        metadata={
            "help": "The classification head; each adapter replaces it by its own head of num_classes "
            "outputs. None keeps the base model's head."
        },
    )
    num_classes: int | None = field(default=None, metadata={"help": "Outputs of this adapter's head."})
    id2label: dict[str, str] | None = field(
        default=None, metadata={"help": "Names of this adapter's classes (head output index -> name)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.head_module is not None and (self.num_classes is None or self.num_classes < 1):
            raise ConfigError(
                f"num_classes={self.num_classes}: an adapter with its own head ({self.head_module}) needs "
                "the number of classes of its task (or head_module=None to keep the base model's head)"
            )


@dataclass
class BinaryMaskOptions:
    """The options of a Piggyback-style binary mask (Mallya et al. 2018, their defaults)."""

    threshold: float = field(default=5e-3, metadata={"help": "τ: an entry is on where its score > τ."})
    score_init: float = field(
        default=1e-2, metadata={"help": "Initial score of every entry (> threshold: masks start all on)."}
    )

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if not self.score_init > self.threshold:
            raise ConfigError(
                f"score_init={self.score_init} must be above threshold={self.threshold}, so that masks start "
                "all on"
            )


class BinaryMask(torch.autograd.Function):
    """M = 1[S > τ] in the forward pass; the straight-through estimator ∂L/∂S := ∂L/∂M in the backward
    pass (Piggyback, Mallya et al. 2018). A custom function, so M holds exactly 0 and 1."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        return (scores > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor):
        return grad_mask, None


def binary_mask(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    return BinaryMask.apply(scores, threshold)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as uint8, eight entries per byte (most significant bit first, zero-padded)."""
    flat = mask.detach().flatten().to(torch.uint8).cpu()
    flat = F.pad(flat, (0, -flat.numel() % 8))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (flat.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of `pack_bits`: a boolean tensor of `shape`."""
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.numel() != math.ceil(numel / 8):
        raise ConfigError(
            f"a packed mask of {packed.numel()} {packed.dtype} entries cannot fill a mask of shape "
            f"{tuple(shape)} (needs {math.ceil(numel / 8)} uint8)"
        )
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(1) >> shifts) & 1
    return bits.flatten()[:numel].view(shape).bool()


class TaskAdapterLinear(nn.Module, BaseTunerLayer):
    """An `nn.Linear` with one adapter per task; on the head module, one head per task.

    Subclasses name their parameter dicts in `adapter_layer_names` (the head dict last, named
    `<prefix>head`), list the dicts holding mask scores in `mask_score_names`, and implement
    `update_adaptation`, `adapted_forward` and `merged_weight_and_bias`.
    """

    mask_score_names: tuple[str, ...] = ()

    def __init__(self, base_layer: nn.Linear, adapter_name: str, config: TaskAdapterConfig, is_head: bool):
        super().__init__()
        self.base_layer = base_layer
        self.is_head = is_head
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ModuleDict() if name == self.head_name else nn.ParameterDict())
        for name in self.other_param_names:
            setattr(self, name, {})
        self.merged_adapters = []
        self._unmerged_parameters = None
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    @property
    def head_name(self) -> str:
        return self.adapter_layer_names[-1]

    def update_layer(self, adapter_name: str, config: TaskAdapterConfig) -> None:
        if self.is_head:
            head = nn.Linear(self.in_features, config.num_classes, bias=self.base_layer.bias is not None)
            getattr(self, self.head_name)[adapter_name] = head
        else:
            self.update_adaptation(adapter_name, config)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    # what a method defines

    def update_adaptation(self, adapter_name: str, config: TaskAdapterConfig) -> None:
        raise NotImplementedError

    def adapted_forward(self, x: torch.Tensor, adapter_name: str) -> torch.Tensor:
        raise NotImplementedError

    def merged_weight_and_bias(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    # shared behaviour

    def has_adapter(self, adapter_name: str) -> bool:
        return any(adapter_name in getattr(self, name) for name in self.adapter_layer_names)

    def adapter_weight_and_bias(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias of a plain `nn.Linear` equal to this layer under `adapter_name`."""
        if self.is_head:
            head = getattr(self, self.head_name)[adapter_name]
            return head.weight, head.bias
        return self.merged_weight_and_bias(adapter_name)

    def active_task_adapter(self) -> str | None:
        """The one active adapter that this layer holds (None: the base layer is used)."""
        active = [name for name in self.active_adapters if self.has_adapter(name)]
        if len(active) > 1:
            raise ValueError(
                f"adapters {active} are active together; a task adapter is used alone: set_adapter(one name)"
            )
        return active[0] if active else None

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.disable_adapters and self.merged:
            self.unmerge()
        adapter_name = None if self.disable_adapters or self.merged else self.active_task_adapter()
        if adapter_name is None:
            return self.base_layer(x, *args, **kwargs)
        if self.is_head:
            return getattr(self, self.head_name)[adapter_name](x)
        return self.adapted_forward(x, adapter_name)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Replace the base weight (and bias) by the adapter's; the originals are kept for `unmerge`."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        if len(adapter_names) > 1:
            raise ValueError(f"merge one task adapter at a time, not {adapter_names}")
        (adapter_name,) = adapter_names
        if not self.has_adapter(adapter_name):
            return
        base = self.get_base_layer()
        with torch.no_grad():
            weight, bias = self.adapter_weight_and_bias(adapter_name)
            weight, bias = weight.detach().clone(), None if bias is None else bias.detach().clone()
        if safe_merge and not torch.isfinite(weight).all():
            raise ValueError(f"merging adapter '{adapter_name}' gives non-finite weights")
        self._unmerged_parameters = (base.weight, base.bias, base.out_features)
        base.weight = nn.Parameter(weight, requires_grad=False)
        base.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        base.out_features = weight.shape[0]
        self.merged_adapters.append(adapter_name)

    def unmerge(self) -> None:
        if not self.merged:
            return
        base = self.get_base_layer()
        base.weight, base.bias, base.out_features = self._unmerged_parameters
        self._unmerged_parameters = None
        self.merged_adapters.clear()


class TaskAdapterModel(BaseTuner):
    """The tuner of a task-incremental adapter method; `tuner_layer_cls` is the method's layer."""

    target_module_mapping: dict = {}

    @staticmethod
    def _check_target_module_exists(config: TaskAdapterConfig, key: str):
        return key == config.head_module or check_target_module_exists(config, key)

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, self.tuner_layer_cls):
            target.update_layer(adapter_name, config)
            return
        if not isinstance(target, nn.Linear):
            raise ConfigError(
                f"target module '{current_key}' is a {type(target).__name__}; {self.prefix[:-1]} adapts "
                "nn.Linear layers only: change target_modules"
            )
        is_head = current_key == config.head_module
        new_module = self.tuner_layer_cls(target, adapter_name, config, is_head=is_head)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    @classmethod
    def _get_adapter_state_dict(cls, model, config, adapter_name, state_dict, unwanted_adapter_names):
        """The adapter's entries, with every mask-score tensor saved as its packed binary mask."""
        entries = super()._get_adapter_state_dict(
            model=model,
            config=config,
            adapter_name=adapter_name,
            state_dict=state_dict,
            unwanted_adapter_names=unwanted_adapter_names,
        )
        suffix = f".{adapter_name}"
        packed = {}
        for key, value in entries.items():
            owner = key.removesuffix(suffix).rpartition(".")[2]
            if key.endswith(suffix) and owner in cls.tuner_layer_cls.mask_score_names:
                key = key.removesuffix(suffix) + PACKED_SUFFIX + suffix
                value = pack_bits(value > config.threshold)
            packed[key] = value
        return packed

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """Unpack the masks (as scores `score_init` where on, `2τ − score_init` where off) and check that
        every tensor fits the base model, before PEFT loads them."""
        expected = {
            cls._remove_adapter_name_from_key(key, adapter_name): value
            for key, value in model.state_dict().items()
            if key.endswith(f".{adapter_name}") or f".{adapter_name}." in key
        }
        expected = {key.removeprefix("base_model.model."): value for key, value in expected.items()}
        unpacked = {}
        for key, value in state_dict.items():
            plain = key.removeprefix("base_model.model.")
            if plain.endswith(PACKED_SUFFIX):
                plain = plain.removesuffix(PACKED_SUFFIX)
                if plain not in expected:
                    raise ConfigError(
                        f"adapter '{adapter_name}': the base model has no layer for '{plain}'; it was saved "
                        f"for another base ({config.base_model_name_or_path!r})"
                    )
                try:
                    mask = unpack_bits(value, expected[plain].shape)
                except ConfigError as err:
                    raise ConfigError(
                        f"adapter '{adapter_name}' does not fit this base model at '{plain}': {err}"
                    ) from err
                on, off = config.score_init, 2 * config.threshold - config.score_init
                value = torch.where(mask, on, off).to(expected[plain].dtype)
                key = "base_model.model." + plain if key.startswith("base_model.model.") else plain
            if plain not in expected:  # PEFT itself would only warn, and leave the adapter as initialised
                raise ConfigError(
                    f"adapter '{adapter_name}': the base model has no layer for '{plain}'; it was saved for "
                    f"another base ({config.base_model_name_or_path!r})"
                )
            if expected[plain].shape != value.shape:
                raise ConfigError(
                    f"adapter '{adapter_name}' does not fit this base model: '{plain}' has shape "
                    f"{tuple(value.shape)} in the adapter and {tuple(expected[plain].shape)} in the model; "
                    f"it was saved for another base ({config.base_model_name_or_path!r})"
                )
            unpacked[key] = value
        return super()._remap_adapter_state_dict_for_load(
            model=model, config=config, adapter_name=adapter_name, state_dict=unpacked
        )


def register_adapter_method(name: str, config_class, model_class) -> None:
    """Make `name` a PEFT method: `get_peft_model`, `PeftModel.from_pretrained`, ... then accept it."""
    PEFT_TYPE_TO_CONFIG_MAPPING[name] = config_class
    PEFT_TYPE_TO_TUNER_MAPPING[name] = model_class
    PEFT_TYPE_TO_PREFIX_MAPPING[name] = model_class.prefix
