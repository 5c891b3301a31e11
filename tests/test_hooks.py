"""The hooks carry the next method families without an edit to the trainer. Two small methods, written
here with hooks only, stand for them:

- a classifier replaced after each task by a closed-form one, nothing trained (SimpleCIL's shape): a
  nearest-class-mean head from feature sums carried across tasks;
- a model that grows a token per task, picked for each image by a no-grad query forward of the same model
  without its tokens (the shape of L2P's and DualPrompt's prompt pools, of DyTox's task tokens).

Each trains, is evaluated, saved and resumed after a crash through the normal task loop."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_args, tiny_processor, tiny_vit
from runs import Crash, CrashAtTask, saved
from safetensors.torch import load_file
from torch import nn

from hf_vitcl import ContinualTrainer
from hf_vitcl.checkpoints import task_dir
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.models import pre_logit_features


class NearestMeanTrainer(ContinualTrainer):
    """A frozen backbone; after each task the head becomes the nearest-class-mean rule in closed form,
    w_c = μ_c, b_c = −‖μ_c‖²/2, from the sums of the classes' pre-logit features."""

    method_name = "nearest_mean"
    carried_state = ("feature_sums", "feature_counts")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.feature_sums = torch.zeros(0)
        self.feature_counts = torch.zeros(0)

    def prepare_model(self, task):
        super().prepare_model(task)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def end_task(self, task):
        batch = task.examples(self.processing_class, "train")[:]
        features = pre_logit_features(self.model.eval(), batch["pixel_values"])
        sums = torch.zeros(len(task.classes), features.shape[1]).index_add_(
            0, batch["labels"] - task.offset, features
        )
        counts = torch.bincount(batch["labels"] - task.offset, minlength=len(task.classes)).float()
        self.feature_sums = torch.cat([self.feature_sums.reshape(-1, features.shape[1]), sums])
        self.feature_counts = torch.cat([self.feature_counts, counts])
        means = self.feature_sums / self.feature_counts[:, None]
        self.model.classifier.weight.copy_(means)
        self.model.classifier.bias.copy_(-0.5 * means.pow(2).sum(1))


class TaskTokens(nn.Module):
    """One learnable token and key per task. Hooked after the embeddings, it inserts after CLS, for each
    image, the token whose key is most similar (cosine) to the image's `query`."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.tokens, self.keys = nn.ParameterList(), nn.ParameterList()
        self.hidden_size = hidden_size
        self.query: torch.Tensor | None = None

    def add(self, generator: torch.Generator) -> None:
        for parameters in (self.tokens, self.keys):
            parameters.append(nn.Parameter(0.02 * torch.randn(self.hidden_size, generator=generator)))

    def picks(self, query: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(query[:, None], torch.stack(list(self.keys))[None], dim=-1).argmax(-1)

    def insert(self, module, args, embeddings):
        if self.query is None:  # the query forward itself
            return embeddings
        token = torch.stack(list(self.tokens))[self.picks(self.query)]
        return torch.cat([embeddings[:, :1], token[:, None], embeddings[:, 1:]], dim=1)


class TaskTokenTrainer(ContinualTrainer):
    """Grows a token and a key per task (older ones frozen, the backbone frozen); each forward first asks the
    model without tokens for the query (no gradient), and a surrogate loss 1 − cos(key_t, query) pulls the
    task's key towards its images' queries."""

    method_name = "task_tokens"
    architectures = ("vit",)

    def prepare_model(self, task):
        super().prepare_model(task)
        if not hasattr(self.model, "task_tokens"):
            self.model.task_tokens = TaskTokens(self.model.config.hidden_size)
            self.model.vit.embeddings.register_forward_hook(self.model.task_tokens.insert)
        self.model.task_tokens.add(torch.Generator().manual_seed(self.args.seed + task.index))
        self.model.requires_grad_(False)
        for parameters in (self.model.task_tokens.tokens, self.model.task_tokens.keys):
            parameters[task.index].requires_grad_(True)
        self.model.classifier.requires_grad_(True)

    def before_forward(self, model, inputs):
        tokens = self.model.task_tokens
        tokens.query = None
        with torch.no_grad():
            tokens.query = pre_logit_features(self.model, inputs["pixel_values"])

    def extra_loss(self, model, inputs, outputs):
        key = self.model.task_tokens.keys[self.task.index]
        return 1 - F.cosine_similarity(key[None], self.model.task_tokens.query, dim=-1).mean()

    def restore_task_checkpoint(self, task):
        """The model with tasks 0..t's tokens; the ViT's weights from task-<t>/ through `from_pretrained`
        (which drops the tokens), the tokens from the same file."""
        for earlier in self.stream.tasks[: task.index + 1]:
            self.prepare_model(earlier)
            self.classes_seen = earlier.labels.stop
        folder = task_dir(self.args.output_dir, task.index)
        self.model.load_state_dict(type(self.model).from_pretrained(folder).state_dict(), strict=False)
        saved = load_file(f"{folder}/model.safetensors")
        prefix = "task_tokens."
        self.model.task_tokens.load_state_dict(
            {name.removeprefix(prefix): value for name, value in saved.items() if name.startswith(prefix)}
        )


def stream(tiny_splits):
    train, test = tiny_splits
    return TaskStream(train, test, n_tasks=2, seed=3, augmentation=Augmentation(0, False))


def fit_crashed_and_resumed(trainer_class, tiny_splits, tmp_path):
    """The trainer of an uninterrupted run in `tmp_path/once`, after the same run crashed at task 2 and
    resumed in `tmp_path/twice`."""
    for run, plugins in (("once", []), ("twice", [CrashAtTask(1)]), ("twice", [])):
        torch.manual_seed(0)
        args = tiny_args(
            tmp_path / run, learning_rate=0.05, max_steps=3, resume=run == "twice" and not plugins
        )
        trainer = trainer_class(
            model=tiny_vit(), args=args, processing_class=tiny_processor(), plugins=plugins
        )
        if plugins:
            with pytest.raises(Crash):
                trainer.fit(stream(tiny_splits))
        else:
            result = trainer.fit(stream(tiny_splits))
            if run == "once":
                uninterrupted, uninterrupted_result = trainer, result
    assert saved(tmp_path / "twice") == saved(tmp_path / "once")  # every figure and every file's digest
    return uninterrupted, uninterrupted_result


def test_a_closed_form_head_replaced_after_each_task(tiny_splits, tmp_path):
    trainer, result = fit_crashed_and_resumed(NearestMeanTrainer, tiny_splits, tmp_path)
    model, processor = trainer.model.eval(), tiny_processor()
    batches = [task.train_dataset(processor, augment=False)[:] for task in trainer.stream]
    with torch.no_grad():
        features = torch.cat([pre_logit_features(model, batch["pixel_values"]) for batch in batches])
    labels = torch.cat([batch["labels"] for batch in batches])
    means = torch.stack([features[labels == label].mean(0) for label in range(4)])
    torch.testing.assert_close(model.classifier.weight, means)
    torch.testing.assert_close(model.classifier.bias, -0.5 * means.pow(2).sum(1))
    assert result.task_agnostic[1, 1] > 50  # the head classifies the separable colours


def test_a_token_per_task_picked_by_a_no_grad_query_of_the_model_without_tokens(tiny_splits, tmp_path):
    trainer, _ = fit_crashed_and_resumed(TaskTokenTrainer, tiny_splits, tmp_path)
    tokens = trainer.model.task_tokens
    assert len(tokens.tokens) == 2
    first = load_file(f"{task_dir(tmp_path / 'once', 0)}/model.safetensors")
    assert torch.equal(first["task_tokens.tokens.0"], tokens.tokens[0])  # frozen after its task
    assert torch.equal(first["task_tokens.keys.0"], tokens.keys[0])
    generator = torch.Generator().manual_seed(trainer.args.seed + 1)
    _, initial_key = (0.02 * torch.randn(32, generator=generator) for _ in range(2))
    assert not torch.equal(tokens.keys[1], initial_key)  # the surrogate loss trained task 2's key
    pixels = trainer.stream[1].test_dataset(tiny_processor())[:]["pixel_values"]
    model = trainer.model.eval()
    with torch.no_grad():
        tokens.query = None
        query = pre_logit_features(model, pixels)  # the model without tokens
        tokens.query = query
        inserted = []
        hook = model.vit.layers[0].register_forward_pre_hook(lambda module, args: inserted.append(args[0]))
        model(pixel_values=pixels)
        hook.remove()
    assert inserted[0].shape[1] == 18  # CLS, the picked token, 16 patches
    torch.testing.assert_close(inserted[0][:, 1], torch.stack(list(tokens.tokens))[tokens.picks(query)])
