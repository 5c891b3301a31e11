"""Building ViT / Swin image classifiers (from a checkpoint or from scratch) and growing their head.

From-scratch sizes follow DeiT (ViT) and the Swin paper, plus `micro` for CPU-sized runs and tests.
Patch and window sizes adapt to small images (32x32 data gets 4x4 ViT patches, 2x2 Swin patches and
4x4 windows).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    SwinConfig,
    SwinForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
)

from hf_vitcl.attention.lpa import ViTLPAConfig
from hf_vitcl.data.transforms import processor_image_size
from hf_vitcl.errors import ConfigError, HubAccessError

ARCHITECTURES = ("vit", "swin")
VIT_SIZES = {
    "micro": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128),
    "tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
SWIN_SIZES = {
    "micro": dict(embed_dim=32, depths=[2, 2], num_heads=[2, 4]),
    "tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24]),
    "small": dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24]),
    "base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32]),
}
SIZES = {"vit": VIT_SIZES, "swin": SWIN_SIZES}
# Model types a checkpoint may have, and their architecture: ViT with Locality-Preserved Attention is a ViT.
FAMILIES = {"vit": "vit", "swin": "swin", ViTLPAConfig.model_type: "vit"}
FAMILY_NAMES = {"vit": "ViT", "swin": "Swin"}
MODEL_TYPES = tuple(FAMILIES)


@dataclass(frozen=True)
class ViTShape:
    """Changes to a from-scratch ViT size: width, depth and heads (the MLP keeps the size's width ratio)."""

    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None

    def given(self) -> list[str]:
        return [name for name, value in asdict(self).items() if value is not None]

    def apply(self, dimensions: dict) -> dict:
        changed = {**dimensions, **{name: getattr(self, name) for name in self.given()}}
        if any(changed[name] < 1 for name in self.given()):
            raise ConfigError(f"{', '.join(self.given())}: must be positive")
        if changed["hidden_size"] % changed["num_attention_heads"]:
            raise ConfigError(
                f"hidden_size={changed['hidden_size']} must be a multiple of "
                f"num_attention_heads={changed['num_attention_heads']}"
            )
        ratio = dimensions["intermediate_size"] // dimensions["hidden_size"]
        return {**changed, "intermediate_size": ratio * changed["hidden_size"]}


def model_config_from_scratch(
    size: str,
    arch: str = "vit",
    image_size: int = 224,
    patch_size: int | None = None,
    shape: ViTShape | None = None,
) -> ViTConfig | SwinConfig:
    """The config of a randomly initialised ViT or Swin of a named size, a ViT's `shape` changed."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"arch='{arch}' is unknown; valid: {', '.join(ARCHITECTURES)}")
    if size not in SIZES[arch]:
        raise ConfigError(f"model size '{size}' is unknown for {arch}; valid: {', '.join(SIZES[arch])}")
    small_images = image_size <= 64
    if arch == "vit":
        patch_size = patch_size or (4 if small_images else 16)
        dimensions = VIT_SIZES[size] if shape is None else shape.apply(VIT_SIZES[size])
        config = ViTConfig(image_size=image_size, patch_size=patch_size, **dimensions)
    else:
        if shape is not None and shape.given():
            raise ConfigError(
                f"{shape.given()[0]}: changes a from-scratch ViT's shape; Swin keeps its size's"
            )
        patch_size = patch_size or (2 if small_images else 4)
        config = SwinConfig(
            image_size=image_size,
            patch_size=patch_size,
            window_size=4 if small_images else 7,
            **SWIN_SIZES[size],
        )
    check_patch_size(config)
    return config


def check_patch_size(config) -> None:
    if config.image_size % config.patch_size:
        raise ConfigError(
            f"image_size={config.image_size} is not a multiple of patch_size={config.patch_size}: "
            "choose sizes that tile the image"
        )


def load_model(
    model: str,
    arch: str = "vit",
    image_size: int | None = None,
    patch_size: int | None = None,
    shape: ViTShape | None = None,
) -> tuple[nn.Module, ViTImageProcessorPil]:
    """A classifier and its image processor: `model` is a size (`tiny`, `small`, `base`), a local
    checkpoint folder or a Hub id. A from-scratch model normalises with mean = std = 0.5."""
    if model in SIZES.get(arch, {}):
        config = model_config_from_scratch(model, arch, image_size or 224, patch_size, shape)
        classifier = (ViTForImageClassification if arch == "vit" else SwinForImageClassification)(config)
        size = config.image_size
        processor = ViTImageProcessorPil(
            size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        return classifier, processor
    try:
        config = AutoConfig.from_pretrained(model)
    except (
        OSError,
        ValueError,
    ) as err:  # ValueError: a folder whose config.json is missing or has no model_type
        if os.path.exists(model):
            raise ConfigError(
                f"model '{model}' is a local path without a loadable config.json ({err})"
            ) from err
        if model in {s for sizes in SIZES.values() for s in sizes}:
            raise ConfigError(f"model size '{model}' is not available for arch='{arch}'") from err
        raise HubAccessError("model", model) from err
    if config.model_type not in MODEL_TYPES:
        raise ConfigError(f"model '{model}' is a {config.model_type}; supported: {', '.join(MODEL_TYPES)}")
    if shape is not None and shape.given():
        raise ConfigError(
            f"{shape.given()[0]}: only a from-scratch model's shape can be chosen, not '{model}''s"
        )
    if image_size is not None and image_size != config.image_size:
        raise ConfigError(
            f"image_size={image_size} does not fit model '{model}', which takes {config.image_size}x"
            f"{config.image_size} images: drop image_size or set it to {config.image_size}"
        )
    try:  # safetensors only: a pickled checkpoint (pytorch_model.bin) could run code when loaded
        classifier = AutoModelForImageClassification.from_pretrained(model, use_safetensors=True)
    except OSError as err:
        raise ConfigError(
            f"model '{model}' has no safetensors weights (model.safetensors); hf_vitcl loads no pickled "
            f"weights: convert the checkpoint (load it once, then save_pretrained) ({err})"
        ) from err
    try:
        processor = ViTImageProcessorPil.from_pretrained(model)
    except OSError:  # a checkpoint without preprocessor_config.json
        size = config.image_size
        processor = ViTImageProcessorPil(size={"height": size, "width": size})
    return classifier, processor


def check_model_fits(model: nn.Module, processor) -> None:
    """The processor's images must be the model's input size, in RGB."""
    config = model.config
    height, width = processor_image_size(processor)
    expected = config.image_size if isinstance(config.image_size, (tuple, list)) else (config.image_size,) * 2
    if (height, width) != tuple(expected):
        raise ConfigError(
            f"image_size: the image processor makes {height}x{width} images but the model takes "
            f"{expected[0]}x{expected[1]}; use the model's own processor or a model built for that size"
        )
    if config.num_channels != 3:
        raise ConfigError(
            f"num_channels={config.num_channels}: the data is RGB, the model must take 3 channels"
        )
    check_patch_size(config)


def grown_linear(
    head: nn.Linear | None, num_classes: int, in_features: int, keep: int, seed: int, std: float
):
    """A linear head of `num_classes` outputs whose first `keep` rows are copied from `head`; new rows start
    as in HF's initialisation (weights ~ N(0, std²), zero bias) from a generator seeded by `seed`, so every
    process of a distributed run grows the same head. On `head`'s device and dtype."""
    if not 0 <= keep <= min(num_classes, getattr(head, "out_features", 0)):
        raise ValueError(
            f"cannot keep {keep} rows of a head of {getattr(head, 'out_features', 0)} growing to "
            f"{num_classes}"
        )
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_classes, in_features, generator=generator) * std
    reference = head.weight if isinstance(head, nn.Linear) else None
    grown = nn.Linear(
        in_features,
        num_classes,
        device=None if reference is None else reference.device,
        dtype=None if reference is None else reference.dtype,
    )
    with torch.no_grad():
        grown.weight.copy_(weight)
        grown.bias.zero_()
        if keep:
            grown.weight[:keep] = head.weight[:keep]
            grown.bias[:keep] = head.bias[:keep]
    return grown


def grow_classifier(model: nn.Module, class_names: list[str], keep: int, seed: int = 0) -> nn.Linear:
    """Replace `model.classifier` by one with `len(class_names)` outputs, copying the first `keep` rows
    (`grown_linear`, new rows ~ N(0, initializer_range²)). The config's `num_labels`, `id2label` and
    `label2id` follow, so each checkpoint is a plain HF model."""
    head = model.classifier
    num_classes = len(class_names)
    in_features = head.in_features if isinstance(head, nn.Linear) else model.config.hidden_size
    grown = grown_linear(
        head if isinstance(head, nn.Linear) else None,
        num_classes,
        in_features,
        keep,
        seed,
        model.config.initializer_range,
    )
    reference = next(model.parameters())
    model.classifier = grown = grown.to(device=reference.device, dtype=reference.dtype)
    model.num_labels = num_classes
    model.config.num_labels = num_classes
    model.config.id2label = dict(enumerate(class_names))
    model.config.label2id = {name: i for i, name in enumerate(class_names)}
    return grown


def model_family(model: nn.Module) -> str:
    """The architecture of `model` (`vit` or `swin`; a ViT with LPA is a `vit`), else its model type."""
    model_type = model.config.model_type
    return FAMILIES.get(model_type, model_type)


class _FeaturesCaptured(Exception):
    """Stops a forward once the classifier's input is captured."""


def pre_logit_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The input of `model.classifier` (ViT: the final-layernorm CLS token; Swin: the pooled output),
    captured with a forward pre-hook on the classifier, which then stops the forward (the head does not
    run); works on HF ViT/Swin ForImageClassification."""
    captured = []

    def capture(module, args):
        captured.append(args[0])
        raise _FeaturesCaptured

    hook = model.classifier.register_forward_pre_hook(capture)
    try:
        model(pixel_values=pixel_values)
    except _FeaturesCaptured:
        pass
    finally:
        hook.remove()
    return captured[0]
