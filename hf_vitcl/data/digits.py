"""Split Digits: scikit-learn's bundled 8x8 handwritten digits as a Hugging Face image dataset.

1,797 real images of 10 classes ship inside scikit-learn, so the default run needs no network. The
16-level grey images are scaled to 0..255, upscaled (bilinear) to `image_size` and made RGB; a
stratified 80/20 train/test split with a fixed seed (0) makes the split part of the dataset's
definition, independent of the run's seed.
"""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

DIGIT_NAMES = [str(d) for d in range(10)]


def load_digits_dataset(image_size: int = 32, test_fraction: float = 0.2) -> DatasetDict:
    """The digits as a `DatasetDict` with `train` and `test` splits, columns `image` and `label`."""
    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = [
        Image.fromarray(p, mode="L").resize((image_size, image_size), Image.BILINEAR).convert("RGB")
        for p in pixels
    ]
    labels = digits.target.tolist()
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=0
    )
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=DIGIT_NAMES)})

    def split(indices):
        indices = sorted(indices)
        return Dataset.from_dict(
            {"image": [images[i] for i in indices], "label": [labels[i] for i in indices]},
            features=features,
        )

    return DatasetDict(train=split(train_idx), test=split(test_idx))
