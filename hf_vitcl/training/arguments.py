"""`ContinualTrainingArguments`, the Trainer's arguments plus the continual options, and `MethodConfig`, the
base of every method's hyper-parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from transformers import TrainingArguments

from hf_vitcl.errors import ConfigError
from hf_vitcl.plugins.replay import SELECTIONS

LOSS_SCOPES = ("current", "seen")
NAN_POLICIES = ("stop", "skip")
# The ranges a method config declares for its options (`ranges = {"lamb": NON_NEGATIVE}`).
POSITIVE, NON_NEGATIVE, UNIT_INTERVAL = "> 0", "≥ 0", "in [0, 1]"
RANGES = {
    POSITIVE: lambda value: value > 0,
    NON_NEGATIVE: lambda value: value >= 0,
    UNIT_INTERVAL: lambda value: 0 <= value <= 1,
}


@dataclass
class ContinualTrainingArguments(TrainingArguments):
    """`TrainingArguments` (applied to every task: epochs, `max_steps`, lr, ... are per task) plus the
    continual options, which switch the built-in plugins on (`hf_vitcl.plugins`). Defaults differ from
    `TrainingArguments` where the task loop needs it: `remove_unused_columns=False` (the transform needs the
    image column) and `save_strategy="no"` (each task's model is saved as `task-<t>/` anyway). `push_to_hub`
    (with `hub_model_id`, `hub_token`, `hub_private_repo`) pushes each task's checkpoint to the repo's branch
    `task-<t>` (the `HubPush` plugin); the Trainer's own pushes of its mid-task checkpoints are not made."""

    loss_scope: str = field(
        default="current",
        metadata={
            "help": "Cross-entropy over the current task's classes ('current', the default of FACIL and "
            "of the seed works) or over all classes seen so far ('seen')."
        },
    )
    save_task_checkpoints: bool = field(default=True, metadata={"help": "Save task-<t>/ after each task."})
    overwrite_results: bool = field(
        default=False,
        metadata={"help": "Allow writing into an output_dir that already holds a results.json."},
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue the run in output_dir after a crash: from its last task done, or from the "
            "last Trainer checkpoint inside the next task (with save_strategy steps). Starts the run if "
            "none is there."
        },
    )
    memory_size: int = field(
        default=0,
        metadata={
            "help": "Exemplar memory: total number of training examples kept from the classes seen so far, "
            "balanced over classes and replayed with every new task (0: no memory). With a memory the "
            "cross-entropy runs over all classes seen."
        },
    )
    memory_selection: str = field(
        default="herding", metadata={"help": "How exemplars are chosen: herding (iCaRL's) or random."}
    )
    attention_distance_images: int = field(
        default=0,
        metadata={
            "help": "After every task, measure the mean attention distance per block and head on this many "
            "fixed test images, balanced over all tasks (0: off)."
        },
    )
    attention_drift_images: int = field(
        default=0,
        metadata={
            "help": "After every task, the attention drift of every earlier task: 1 − cosine similarity of "
            "the mean-centred rollout maps of this many fixed test images per task to their maps right after "
            "the task, per block (0: off; ViT only)."
        },
    )
    hub_push_attempts: int = field(
        default=3,
        metadata={"help": "push_to_hub: attempts per task checkpoint before it is reported failed."},
    )
    hub_retry_seconds: float = field(
        default=10.0,
        metadata={"help": "push_to_hub: wait before the second attempt, doubled before each later one."},
    )
    nan_policy: str = field(
        default="stop",
        metadata={
            "help": "A non-finite loss or gradient: 'stop' ends the run with an error naming the task and "
            "step (nothing of the task is saved); 'skip' leaves the step out (no parameter moves; the "
            "learning-rate schedule goes on) and counts it in results.json (skipped_steps)."
        },
    )
    plugins: list[str] | None = field(
        default=None,
        metadata={
            "help": "Plugins of your own, by dotted path (`package.module.Class`): each a ContinualPlugin "
            "subclass built without arguments, run after the built-in ones."
        },
    )
    remove_unused_columns: bool = False
    save_strategy: str = "no"

    def __post_init__(self):
        self.check_training_options()  # before the Trainer's own checks, which raise tracebacks
        super().__post_init__()
        if self.nan_policy not in NAN_POLICIES:
            raise ConfigError(f"nan_policy='{self.nan_policy}' is unknown; valid: {', '.join(NAN_POLICIES)}")
        if self.loss_scope not in LOSS_SCOPES:
            raise ConfigError(f"loss_scope='{self.loss_scope}' is unknown; valid: {', '.join(LOSS_SCOPES)}")
        for name in ("memory_size", "attention_distance_images", "attention_drift_images"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be 0 (off) or a positive count")
        if self.resume and self.overwrite_results:
            raise ConfigError(
                "resume continues the run in output_dir, overwrite_results starts it over: pick one"
            )
        if self.resume and not self.save_task_checkpoints:
            raise ConfigError("resume restarts from the saved task checkpoints: set save_task_checkpoints")
        if self.push_to_hub and not self.save_task_checkpoints:
            raise ConfigError("push_to_hub pushes the saved task checkpoints: set save_task_checkpoints")
        if self.hub_push_attempts < 1 or self.hub_retry_seconds < 0:
            raise ConfigError(
                f"hub_push_attempts={self.hub_push_attempts} must be ≥ 1 and hub_retry_seconds="
                f"{self.hub_retry_seconds} ≥ 0"
            )
        if self.memory_selection not in SELECTIONS:
            raise ConfigError(
                f"memory_selection='{self.memory_selection}' is unknown; valid: {', '.join(SELECTIONS)}"
            )

    def check_training_options(self) -> None:
        """A `ConfigError` naming the first Trainer option that cannot train anything sensible."""
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if not self.learning_rate >= 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be 0 or positive")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be 0 or positive")
        if self.max_steps < -1:
            raise ConfigError(
                f"max_steps={self.max_steps}: give the optimizer steps per task (> 0), or -1 to train "
                "num_train_epochs"
            )
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ConfigError(
                f"num_train_epochs={self.num_train_epochs} with no max_steps trains nothing: give epochs "
                "per task > 0, or max_steps > 0"
            )


@dataclass
class MethodConfig:
    """Hyper-parameters of a method; subclasses add fields with `metadata={"help": ...}` and declare the
    range of each numeric option in `ranges` ({option: POSITIVE, NON_NEGATIVE or UNIT_INTERVAL}, merged with
    the base classes'), checked when the config is made. A subclass's own `__post_init__` calls this one."""

    ranges: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        ranges = {
            name: bound
            for cls in reversed(type(self).__mro__)
            for name, bound in vars(cls).get("ranges", {}).items()
        }
        for name, bound in ranges.items():
            value = getattr(self, name)
            if value is not None and not all(
                RANGES[bound](item) for item in (value if isinstance(value, list) else [value])
            ):
                raise ConfigError(f"{name}={value} must be {bound}")
