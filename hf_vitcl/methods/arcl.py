"""Attention Retention, ARCL (Lu, Zhou, Zhang, Xing, Liang, Zhang, AAAI 2026, arXiv 2602.05454): keep new
tasks' gradients from moving the attention earlier tasks learned ("attention drift").

Retention masks (`hf_vitcl.attention.rollout`): per image and block l, the rollout map thresholded at its
knee, 1 where free, 0 where attended. Which masks guide task t > 1 (`mask_mode`):
- `accumulated` (the authors' code): after every task, the binary masks of all its training images; M_l is
  their mean per patch over every image of every earlier task, one soft mask shared by all images;
- `teacher` (this project's instance-adaptive mode): each current image's own binary mask, from the
  rollout of the model as it was before the task.
The CLS query row gets 0 in both: it is protected from task 2 on.

Gradient masking (t > 1), per block, with logits A = QKᵀ·s, probabilities S, context F = SV, block input X:
rows (queries) i of ∂L/∂A and of S are scaled by M_l[i], and

    G̃_q = s·(∇Ã K)ᵀ X,    G̃_k = s·(∇Ãᵀ Q)ᵀ X,    G̃_v = (S̃ᵀ ∇F)ᵀ X     (heads merged, batch summed)

Backprop is untouched: every `.grad`, W_q's, W_k's and W_v's included, is plain. G̃ enters only the optimizer
step of W_q, W_k, W_v, multiplied elementwise by ρ = clamp(G̃/G, −10, 10) (ρ = 1 where G = 0), while the
optimizer's moments see G; a zero G̃ so gives a zero step despite momentum and weight decay. Heads and
every other parameter step as usual. Any torch optimizer works (the trainer's step rule,
`before_optimizer_step`); the paper uses Adam.

Trainable set (`trainable`): the paper's `qkv` (W_q, W_k, W_v weights at learning_rate × qkv_lr_scale, the
classifier at learning_rate; biases and everything else frozen) or `all` (the rest at learning_rate).
Cross-entropy on logits / temperature over the current task's classes.

Classifier refinement after each task: the sums that give the mean and covariance (+ 1e-4·I) of the
pre-logit features of each new class's unaugmented training images are kept (`ClassStatistics`; no image
is); the head of all classes seen then trains `refine_epochs` epochs on `refine_samples` features per class
drawn from these Gaussians (SGD, lr 1e-3, momentum 0.9, weight decay 1e-4, batches of 128, cross-entropy on
logits / temperature), by the Gaussian replay SLCA shares (`hf_vitcl.heads.align_classifier`).

Differences from the authors' code, on purpose: their threshold window slides by one value instead of one
image, so only the first image of a class gets its own threshold (here each image and layer does); masks and
statistics come from the trained model after the task rather than from the model during its last epoch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from hf_vitcl.attention.recorder import AttentionRecorder, attention_modules
from hf_vitcl.attention.rollout import attention_rollout, retention_masks
from hf_vitcl.data.stream import Task, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.heads import ClassStatistics, GaussianAlignment, align_classifier
from hf_vitcl.methods.registry import register_method
from hf_vitcl.models import pre_logit_features
from hf_vitcl.training.arguments import NON_NEGATIVE, POSITIVE, MethodConfig
from hf_vitcl.training.trainer import ContinualTrainer

MASK_MODES = ("accumulated", "teacher")
TRAINABLE = ("qkv", "all")
RECORDED = ("input", "query", "key", "logits", "probs", "context")


def masked_attention_gradients(
    hidden: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    probs: torch.Tensor,
    logits_grad: torch.Tensor,
    context_grad: torch.Tensor,
    mask: torch.Tensor,
    scaling: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(G̃_q, G̃_k, G̃_v) of one block, each shaped like its projection weight (H·d, C), from X (B, N, C),
    Q, K (B, H, N, d), S and ∂L/∂A (B, H, N, N), ∂L/∂F (B, H, N, d) and the mask (N,) or (B, N) of the
    query rows (module docstring)."""
    rows = mask.to(probs.dtype).unsqueeze(-2).unsqueeze(-1)  # (1 or B, 1, N, 1)
    logits_grad = logits_grad * rows
    probs = probs * rows
    projection_grads = (
        scaling * logits_grad @ key,
        scaling * logits_grad.transpose(-1, -2) @ query,
        probs.transpose(-1, -2) @ context_grad,
    )
    inputs = hidden.reshape(-1, hidden.shape[-1])
    return tuple(grad.transpose(1, 2).flatten(2).flatten(0, 1).T @ inputs for grad in projection_grads)


def step_scale(masked: torch.Tensor, plain: torch.Tensor, limit: float = 10.0) -> torch.Tensor:
    """ρ = clamp(G̃/G, −limit, limit), 1 where G = 0."""
    ratio = masked / torch.where(plain == 0, torch.ones_like(plain), plain)
    return torch.where(plain == 0, torch.ones_like(ratio), ratio.clamp(-limit, limit))


def attention_weights(model: nn.Module) -> list[tuple[nn.Parameter, nn.Parameter, nn.Parameter]]:
    """(W_q, W_k, W_v) of every block, in forward order."""
    return [(m.q_proj.weight, m.k_proj.weight, m.v_proj.weight) for m in attention_modules(model)]


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (autocast) in float32, others as they are."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class AttentionGradientMasker:
    """While active, records every block's X, Q, K, A, S, F; after each backward, `accumulate(masks)` adds
    that micro-batch's (G̃_q, G̃_k, G̃_v); `step_scales()` turns the sums into ρ against the parameters'
    (accumulated) `.grad` and starts over."""

    def __init__(self, model: nn.Module, limit: float = 10.0):
        self.recorder = AttentionRecorder(model, targets=RECORDED)
        self.weights = attention_weights(model)
        self.scalings = [module.scaling for module in attention_modules(model)]
        self.limit = limit
        self.masked: dict[torch.Tensor, torch.Tensor] = {}

    def __enter__(self) -> AttentionGradientMasker:
        self.recorder.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self.recorder.__exit__(*exc_info)
        self.masked = {}

    def retain_gradients(self) -> None:
        """Call after the forward, before the backward: keeps ∂L/∂A and ∂L/∂F."""
        for tensor in self.recorder["logits"] + self.recorder["context"]:
            tensor.retain_grad()

    @torch.no_grad()
    def accumulate(self, masks: torch.Tensor) -> None:
        """Add the masked gradients of the recorded micro-batch; `masks` is (L, N) or (B, L, N)."""
        layers = len(self.weights)
        recorded = {target: self.recorder[target] for target in RECORDED}
        if any(len(tensors) != layers for tensors in recorded.values()):
            raise RuntimeError("accumulate() needs exactly one recorded forward since the last call")
        for layer, weights in enumerate(self.weights):
            logits, context = recorded["logits"][layer], recorded["context"][layer]
            if logits.grad is None or context.grad is None:
                raise RuntimeError("no attention gradient: call retain_gradients() before backward")
            gradients = masked_attention_gradients(
                *(
                    _at_least_float32(recorded[target][layer])
                    for target in ("input", "query", "key", "probs")
                ),
                _at_least_float32(logits.grad),
                _at_least_float32(context.grad),
                masks[..., layer, :],
                self.scalings[layer],
            )
            for weight, gradient in zip(weights, gradients, strict=True):
                total = self.masked.get(weight)
                self.masked[weight] = gradient if total is None else total + gradient
        self.recorder.clear()

    @torch.no_grad()
    def step_scales(
        self, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor
    ) -> dict[torch.Tensor, torch.Tensor]:
        """{weight: ρ} from the accumulated G̃ (passed through `reduce`, e.g. a mean over processes, as
        DDP averages `.grad`) and each weight's `.grad`; then the sums start over."""
        scales = {
            weight: step_scale(reduce(masked), _at_least_float32(weight.grad), self.limit).to(weight.dtype)
            for weight, masked in self.masked.items()
            if weight.grad is not None
        }
        self.masked = {}
        return scales


@dataclass
class ARCLConfig(MethodConfig):
    ranges: ClassVar[dict[str, str]] = {
        "qkv_lr_scale": POSITIVE,
        "temperature": POSITIVE,
        "ratio_limit": POSITIVE,
        "threshold_sigma": POSITIVE,
        "refine_epochs": POSITIVE,
        "refine_samples": POSITIVE,
        "refine_learning_rate": POSITIVE,
        "refine_batch_size": POSITIVE,
        "covariance_ridge": NON_NEGATIVE,
    }
    mask_mode: str = field(
        default="accumulated",
        metadata={
            "help": "Masks guiding later tasks: 'accumulated' (mean binary mask of all earlier tasks' "
            "training images, the authors' code) or 'teacher' (each image's own mask from the previous "
            "model)."
        },
    )
    trainable: str = field(
        default="qkv",
        metadata={
            "help": "What trains: 'qkv' (W_q, W_k, W_v weights and the classifier, the paper's) or 'all'."
        },
    )
    qkv_lr_scale: float = field(
        default=0.01,
        metadata={
            "help": "W_q, W_k, W_v train at learning_rate × this (paper: 1e-2 × 0.01).",
        },
    )
    temperature: float = field(default=30.0, metadata={"help": "Cross-entropy on logits / temperature."})
    ratio_limit: float = field(default=10.0, metadata={"help": "ρ = clamp(G̃/G, −limit, limit)."})
    threshold_points: int = field(
        default=10_000, metadata={"help": "Points the empirical CDF is interpolated onto for the knee."}
    )
    threshold_sigma: float = field(
        default=20.0, metadata={"help": "Gaussian smoothing of the CDF, in points."}
    )
    threshold_offset: float = field(default=1e-3, metadata={"help": "Subtracted from the knee value."})
    refine_classifier: bool = field(
        default=True, metadata={"help": "Refine the head on Gaussian class statistics after each task."}
    )
    refine_epochs: int = field(default=20, metadata={"help": "Epochs of classifier refinement."})
    refine_samples: int = field(default=128, metadata={"help": "Features drawn per class and epoch."})
    refine_learning_rate: float = field(
        default=1e-3, metadata={"help": "SGD learning rate of the refinement."}
    )
    refine_batch_size: int = field(default=128, metadata={"help": "Batch size of the refinement."})
    covariance_ridge: float = field(
        default=1e-4, metadata={"help": "Added to each class covariance's diagonal."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.mask_mode not in MASK_MODES:
            raise ConfigError(f"mask_mode='{self.mask_mode}' is unknown; valid: {', '.join(MASK_MODES)}")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"trainable='{self.trainable}' is unknown; valid: {', '.join(TRAINABLE)}")
        if int(4 * self.threshold_sigma + 0.5) >= self.threshold_points:
            raise ConfigError(
                f"threshold_points={self.threshold_points} must exceed the smoothing radius "
                f"4·threshold_sigma = {4 * self.threshold_sigma:g}"
            )


@register_method
class ARCLTrainer(ContinualTrainer):
    method_name = "arcl"
    config_class = ARCLConfig
    architectures = ("vit",)  # rollout needs a CLS token and global attention
    carried_state = ("mask_sum", "mask_count", "class_statistics")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_sum: torch.Tensor | None = None  # (L, P) sum of binary masks over earlier training images
        self.mask_count = 0
        self.class_statistics = ClassStatistics(self.model.classifier.in_features, second_moments=True)
        self.teacher: nn.Module | None = None
        self.masker: AttentionGradientMasker | None = None
        self._teacher_recorder: AttentionRecorder | None = None
        self._recording = ExitStack()
        self._shared_masks: torch.Tensor | None = None
        self._step_masks: torch.Tensor | None = None
        self._report: dict | None = None

    # masks

    @property
    def threshold_options(self) -> dict:
        config = self.method_config
        return {
            "points": config.threshold_points,
            "sigma": config.threshold_sigma,
            "offset": config.threshold_offset,
        }

    def accumulated_masks(self) -> torch.Tensor:
        """(L, N): the mean binary mask of all earlier training images per block and patch, CLS = 0."""
        mean = self.mask_sum / self.mask_count
        return F.pad(mean, (1, 0)).to(self.args.device)

    @torch.no_grad()
    def teacher_masks(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, L, N): each image's binary masks from the previous model's rollout, CLS = 0."""
        self._teacher_recorder.clear()
        self.teacher(pixel_values=pixel_values)
        maps = attention_rollout(self._teacher_recorder["probs"])
        return F.pad(retention_masks(maps, **self.threshold_options), (1, 0))

    # the task loop

    def classification_temperature(self) -> float:
        return self.method_config.temperature

    def begin_task(self, task: Task) -> None:
        self._set_trainable()
        if task.index == 0:
            return
        if self.method_config.mask_mode == "teacher":
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
            self._teacher_recorder = self._recording.enter_context(
                AttentionRecorder(self.teacher, ("probs",))
            )
        else:
            self._shared_masks = self.accumulated_masks()
        self.masker = self._recording.enter_context(
            AttentionGradientMasker(self.model, self.method_config.ratio_limit)
        )

    def end_task(self, task: Task) -> None:
        self._recording.close()  # the model back on its fast attention
        self.masker = self.teacher = self._teacher_recorder = None
        self._shared_masks = self._step_masks = None
        mask_sum, count = self._task_statistics(task)
        self.mask_sum = mask_sum if self.mask_sum is None else self.mask_sum + mask_sum
        self.mask_count += count
        self._report = {"mask_images": count, "protected_fraction": (1 - mask_sum / count).mean(-1).tolist()}
        if self.method_config.refine_classifier:
            self.refine_classifier(task)

    def task_report(self, task: Task) -> dict:
        """Per block, the share of patches the task's training images protect (binary mask 0), and their
        number: how much of the attention later tasks may not move."""
        return self._report

    def _attention_weight_ids(self) -> set[int]:
        return {id(weight) for block in attention_weights(self.model) for weight in block}

    def _set_trainable(self) -> None:
        if self.method_config.trainable == "all":
            return
        weights = self._attention_weight_ids()
        for name, param in self.model.named_parameters():
            param.requires_grad_(id(param) in weights or name.startswith("classifier."))

    def learning_rate_scale(self, name, param) -> float:
        """W_q, W_k, W_v train at learning_rate × qkv_lr_scale."""
        return self.method_config.qkv_lr_scale if id(param) in self._attention_weight_ids() else 1.0

    # the training step

    def before_forward(self, model, inputs):
        if self.masker is not None and model.training:
            self._step_masks = (
                self.teacher_masks(inputs["pixel_values"]) if self.teacher is not None else self._shared_masks
            )

    def before_backward(self, loss):
        if self.masker is not None:
            self.masker.retain_gradients()

    def after_backward(self):
        if self.masker is not None:
            self.masker.accumulate(self._step_masks)

    def before_optimizer_step(self):
        """ρ of W_q, W_k, W_v from the step's masked and plain gradients (G̃ averaged over processes, as DDP
        averages `.grad`)."""
        if self.masker is None:
            return None
        return self.masker.step_scales(lambda tensor: self.accelerator.reduce(tensor, reduction="mean"))

    # after a task: masks, class statistics, refinement

    @torch.no_grad()
    def _task_statistics(self, task: Task) -> tuple[torch.Tensor, int]:
        """The sum of the binary masks (L, P) of the task's unaugmented training images and their number n,
        and their pre-logit features into `class_statistics`, in one pass of the trained model (eval
        mode)."""
        model, device = self.model, self.args.device
        was_training = model.training
        model.eval()
        mask_sum, count = 0, 0
        loader = DataLoader(
            task.train_dataset(self.processing_class, augment=False),
            batch_size=self.args.per_device_eval_batch_size,
            num_workers=self.args.dataloader_num_workers,
        )
        try:
            with AttentionRecorder(model, ("probs",)) as recorder:
                for batch in loader:
                    recorder.clear()
                    features = pre_logit_features(model, batch["pixel_values"].to(device))
                    self.class_statistics.add(features, batch["labels"])
                    masks = retention_masks(attention_rollout(recorder["probs"]), **self.threshold_options)
                    mask_sum = mask_sum + masks.sum(0).cpu()
                    count += len(masks)
        finally:
            model.train(was_training)
        self.class_statistics.grow(task.labels.stop)
        return mask_sum, count

    def refine_classifier(self, task: Task) -> None:
        """Train the head of all classes seen on features drawn from the classes' Gaussians (module
        docstring); seeded by (seed, task), so every process draws the same."""
        config = self.method_config
        statistics = self.class_statistics
        align_classifier(
            self.model.classifier,
            statistics.means(),
            statistics.covariances(config.covariance_ridge),
            GaussianAlignment(
                epochs=config.refine_epochs,
                samples_per_class=config.refine_samples,
                batch_size=config.refine_batch_size,
                learning_rate=config.refine_learning_rate,
                weight_decay=1e-4,
                temperature=config.temperature,
            ),
            torch.Generator().manual_seed(self.args.seed + task.index),
        )

    def check(self, stream: TaskStream) -> None:
        """ViT only (the trainer checks `architectures`); no LPA blocks, no attention dropout."""
        if any(getattr(module, "lpa", None) is not None for module in attention_modules(self.model)):
            raise ConfigError(
                "arcl: its gradient formulas hold for softmax(QKᵀ/√d) attention, not for Locality-Preserved "
                "Attention blocks; use a plain ViT"
            )
        if self.model.config.attention_probs_dropout_prob > 0:
            raise ConfigError(
                "arcl: attention_probs_dropout_prob must be 0 (G̃_v uses the attention that multiplied V, "
                f"as the authors' code), got {self.model.config.attention_probs_dropout_prob}"
            )
