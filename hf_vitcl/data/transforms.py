"""Image preprocessing from a model's image processor, with train-time augmentation in PIL and torch.

No torchvision (it breaks beside the CPU torch build, see the stack notes): the augmentations used by
the continual-learning literature on CIFAR-like data are a random crop after zero padding and a
horizontal flip, both a few lines here. Randomness comes from torch's global generator, which the
Trainer seeds, so a fixed seed gives a fixed augmentation sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from datasets import Image as ImageFeature
from PIL import Image, ImageOps

from hf_vitcl.errors import ConfigError

_IMAGE_DECODER = ImageFeature()


@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentation: zero-pad by `crop_padding` pixels and crop back at random, then flip."""

    crop_padding: int = 4
    horizontal_flip: bool = True

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.crop_padding > 0:
            width, height = image.size
            padded = ImageOps.expand(image, border=self.crop_padding, fill=0)
            left, top = torch.randint(0, 2 * self.crop_padding + 1, (2,)).tolist()
            image = padded.crop((left, top, left + width, top + height))
        if self.horizontal_flip and torch.rand(()) < 0.5:
            image = ImageOps.mirror(image)
        return image


def processor_image_size(processor) -> tuple[int, int]:
    """(height, width) that `processor` resizes images to; only fixed-size processors are supported."""
    size = getattr(processor, "size", None) or {}
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    raise ConfigError(
        f"image processor {type(processor).__name__} has size={size!r}; a fixed {{'height', 'width'}} "
        "size is needed (ViT and Swin processors have one)"
    )


def decode_image(value) -> Image.Image:
    """Decode a stored image (a PIL image, or the {'bytes', 'path'} dict of an undecoded column) to RGB."""
    image = value if isinstance(value, Image.Image) else _IMAGE_DECODER.decode_example(value)
    return image.convert("RGB")


class ImageClassificationTransform:
    """Turn raw examples into `pixel_values` and `labels` for a model.

    The image is decoded, resized to the processor's size, augmented (train only: the crop padding is
    relative to that size), then rescaled and normalised by the processor; the label is mapped from
    the dataset's value to the stream's class index with `label_map`.
    """

    def __init__(
        self,
        processor,
        label_map: Mapping,
        image_column: str,
        label_column: str,
        augmentation: Augmentation | None = None,
    ):
        self.processor = processor
        self.label_map = dict(label_map)
        self.image_column = image_column
        self.label_column = label_column
        self.augmentation = augmentation
        height, width = processor_image_size(processor)
        self.size = (width, height)  # PIL order
        resample = getattr(processor, "resample", None)
        self.resample = Image.BILINEAR if resample is None else resample

    def _image(self, value) -> Image.Image:
        image = decode_image(value)
        if image.size != self.size:
            image = image.resize(self.size, resample=self.resample)
        return self.augmentation(image) if self.augmentation is not None else image

    def _pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        return self.processor(images, do_resize=False, return_tensors="pt")["pixel_values"]

    def batch(self, examples: Mapping[str, list]) -> dict[str, torch.Tensor]:
        """For `Dataset.with_transform`: a dict of lists in, a dict of tensors out."""
        images = [self._image(v) for v in examples[self.image_column]]
        labels = [self.label_map[v] for v in examples[self.label_column]]
        return {"pixel_values": self._pixel_values(images), "labels": torch.tensor(labels)}

    def example(self, example: Mapping) -> dict:
        """For `IterableDataset.map` (which has no `with_transform`): one example in, one out."""
        pixel_values = self._pixel_values([self._image(example[self.image_column])])[0]
        return {"pixel_values": pixel_values, "labels": self.label_map[example[self.label_column]]}
