"""Image preprocessing from a model's image processor, with train-time augmentation in PIL and torch.

No torchvision (it breaks beside the CPU torch build, see the stack notes): the augmentations used by
the continual-learning literature on CIFAR-like data are a random crop after zero padding and a
horizontal flip, both a few lines here. Randomness comes from a generator per example where the caller
gives one (in-memory training sets: `hf_vitcl.data.stream.SeededTrainingExamples`), else from torch's
global generator, which the Trainer seeds.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from datasets import Image as ImageFeature
from PIL import Image, ImageOps

from hf_vitcl.errors import ConfigError

logger = logging.getLogger(__name__)

_IMAGE_DECODER = ImageFeature()
CORRUPT_IMAGE_OPTIONS = ("error", "skip")
# What PIL and `datasets` raise for bytes that are no image, a truncated or damaged file, a missing file or
# an empty cell.
DECODE_ERRORS = (OSError, SyntaxError, ValueError)


@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentation: zero-pad by `crop_padding` pixels and crop back at random, then flip."""

    crop_padding: int = 4
    horizontal_flip: bool = True

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
        """The augmented image, drawn from `generator` (default: torch's global one)."""
        if self.crop_padding > 0:
            width, height = image.size
            padded = ImageOps.expand(image, border=self.crop_padding, fill=0)
            left, top = torch.randint(0, 2 * self.crop_padding + 1, (2,), generator=generator).tolist()
            image = padded.crop((left, top, left + width, top + height))
        if self.horizontal_flip and torch.rand((), generator=generator) < 0.5:
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
    """Decode a stored image (a PIL image, or the {'bytes', 'path'} dict of an undecoded column) to RGB.

    Any mode PIL reads (L, LA, P, RGBA, CMYK, I;16, ...) is converted; an image that cannot be decoded
    raises one of `DECODE_ERRORS`."""
    if value is None:
        raise ValueError("the image cell is empty (None)")
    image = value if isinstance(value, Image.Image) else _IMAGE_DECODER.decode_example(value)
    return image.convert("RGB")


class CorruptImageError(ConfigError, OSError):
    """An image that cannot be decoded, met with `corrupt_images='error'`. Found when the image is read:
    possibly during training or evaluation (the tasks done by then are saved), and reported on one line by
    `hf_vitcl.cli.main` like the configuration errors; an `OSError` too, as PIL's own decoding errors are."""


class CorruptImages:
    """What happens to an image that cannot be decoded: `'error'` raises `CorruptImageError`; `'skip'`
    leaves its example out, logs a warning with the running count and counts it in `skipped` ({split:
    count}, each image once: by its row when known, else by its path and bytes).

    The count is kept in the process that meets the image. A DataLoader worker counts in its own copy, so
    with `dataloader_num_workers > 0` a streamed split's skips are logged by the workers but missing from
    `skipped` in the main process, and each process of a distributed run counts what it reads. An in-memory
    split is checked whole when its stream is built (`TaskStream`), so its count is complete everywhere."""

    def __init__(self, option: str = "error", dataset_name: str | None = None):
        if option not in CORRUPT_IMAGE_OPTIONS:
            raise ConfigError(
                f"corrupt_images='{option}' is unknown; valid: {', '.join(CORRUPT_IMAGE_OPTIONS)}"
            )
        self.option = option
        self.dataset_name = dataset_name
        self.skipped = {"train": 0, "test": 0}
        self._seen: dict[str, set] = {}

    def handle(self, split: str, value, label, error: Exception, row: int | None = None) -> None:
        """Raise `CorruptImageError` ('error'), or count and log the image when first met ('skip')."""
        where = f"the {split} split" + (f" of '{self.dataset_name}'" if self.dataset_name else "")
        path = value.get("path") if isinstance(value, Mapping) else None
        parts = [f"row {row}"] if row is not None else []
        parts.append(f"label {label!r}")
        if path:
            parts.append(f"path '{path}'")
        details = ", ".join(parts)
        reason = f"{type(error).__name__}: {error}"
        if self.option == "error":
            raise CorruptImageError(
                f"an image in {where} ({details}) cannot be decoded ({reason}); pass corrupt_images='skip' "
                "(--corrupt_images skip) to leave undecodable images out, counted"
            ) from error
        seen = self._seen.setdefault(split, set())
        key = row if row is not None else (path, _digest(value))
        if key not in seen:
            seen.add(key)
            self.skipped[split] = len(seen)
            logger.warning(
                "skipped an undecodable image in %s (%s): %s; %d skipped in that split so far",
                where,
                details,
                reason,
                len(seen),
            )


def _digest(value) -> str | None:
    data = value.get("bytes") if isinstance(value, Mapping) else None
    return hashlib.sha1(data).hexdigest() if isinstance(data, bytes) else None


class ImageClassificationTransform:
    """Turn raw examples into `pixel_values` and `labels` for a model.

    The image is decoded, resized to the processor's size, augmented (train only: the crop padding is
    relative to that size), then rescaled and normalised by the processor; the label is mapped from
    the dataset's value to the stream's class index with `label_map`. An image that cannot be decoded
    goes to `corrupt_images` (default: raise), as an image of `split`; a skipped one leaves the batch
    shorter.
    """

    def __init__(
        self,
        processor,
        label_map: Mapping,
        image_column: str,
        label_column: str,
        augmentation: Augmentation | None = None,
        *,
        corrupt_images: CorruptImages | None = None,
        split: str = "train",
    ):
        self.processor = processor
        self.label_map = dict(label_map)
        self.image_column = image_column
        self.label_column = label_column
        self.augmentation = augmentation
        self.corrupt_images = corrupt_images if corrupt_images is not None else CorruptImages()
        self.split = split
        self.height, self.width = processor_image_size(processor)
        resample = getattr(processor, "resample", None)
        self.resample = Image.BILINEAR if resample is None else resample

    def _image(self, image: Image.Image, generator: torch.Generator | None) -> Image.Image:
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), resample=self.resample)
        return self.augmentation(image, generator) if self.augmentation is not None else image

    def _pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        if not images:  # every image of the batch skipped
            return torch.empty(0, 3, self.height, self.width)
        return self.processor(images, do_resize=False, return_tensors="pt")["pixel_values"]

    def batch(
        self, examples: Mapping[str, list], generators: list[torch.Generator] | None = None
    ) -> dict[str, torch.Tensor]:
        """For `Dataset.with_transform`, and `IterableDataset.map(batched=True)`: a dict of lists in, a dict
        of tensors out, without the examples whose image was skipped. `generators`: one per example, for
        its augmentation (default: torch's global generator)."""
        images, labels = [], []
        values, targets = examples[self.image_column], examples[self.label_column]
        for index, (value, label) in enumerate(zip(values, targets, strict=True)):
            try:
                image = decode_image(value)
            except DECODE_ERRORS as error:
                self.corrupt_images.handle(self.split, value, label, error)
                continue
            images.append(self._image(image, generators[index] if generators is not None else None))
            labels.append(self.label_map[label])
        return {"pixel_values": self._pixel_values(images), "labels": torch.tensor(labels, dtype=torch.long)}
