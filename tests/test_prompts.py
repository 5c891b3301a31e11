"""L2P, DualPrompt and CODA-Prompt against direct computations on a tiny ViT: the key–query selection and the
surrogate loss, the prefix attention, the prompt tokens and their pooling, CODA's weighting and orthogonal
components; then through the trainer: the backbone and what a method freezes stay bit-identical, and a saved
adapter reloads (PEFT and hf_vitcl's loader) with the same logits. (The generic tables of test_methods.py also
run each: fit, refusal on Swin, state, SIGKILL resume.)"""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_args, tiny_processor, tiny_swin, tiny_vit
from peft import PeftModel, get_peft_model
from transformers import AutoModelForImageClassification, ViTForImageClassification

from hf_vitcl import ConfigError, load_task_model
from hf_vitcl.adapters import CODAPromptConfig, DualPromptConfig, L2PConfig
from hf_vitcl.adapters.coda_prompt import orthogonal_rows, orthogonality_penalty
from hf_vitcl.adapters.prompting import Prompts, batchwise_majority, prompt_layers, prompted
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.methods import (
    CODAPromptMethodConfig,
    CODAPromptTrainer,
    DualPromptMethodConfig,
    DualPromptTrainer,
    L2PMethodConfig,
    L2PTrainer,
)

NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False)


def vit() -> ViTForImageClassification:
    """A tiny ViT of 3 blocks (prompts in some blocks, not others), in eval mode."""
    torch.manual_seed(0)
    return tiny_vit(num_labels=5, layers=3).eval()


PIXELS = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def final_cls(model, pixels=PIXELS):
    """The reference query: the final-LayerNorm [CLS] of the model as it is."""
    with torch.no_grad():
        return model.vit(pixels).last_hidden_state[:, 0]


# selection and surrogate loss


def test_l2p_selects_the_top_n_keys_by_cosine_and_its_surrogate_loss_is_their_mean_similarity():
    base = vit()
    query = final_cls(base)
    model = get_peft_model(base, L2PConfig(num_classes=3, pool_size=6, prompt_length=2, top_k=3))
    layer, _ = prompt_layers(model)
    keys = layer.l2p_keys["default"]
    chosen, surrogate = layer.select("default", layer.query(PIXELS))
    for b in range(len(query)):
        similarity = [F.cosine_similarity(query[b], key, dim=0).item() for key in keys]
        best = sorted(range(len(keys)), key=lambda m: -similarity[m])[:3]
        assert sorted(chosen[b].tolist()) == sorted(best)
    expected = -sum(
        F.cosine_similarity(query[b], keys[m], dim=0) for b in range(len(query)) for m in chosen[b].tolist()
    ) / len(query)
    assert surrogate.item() == pytest.approx(expected.item(), rel=1e-5)
    surrogate.backward()  # the loss reaches the keys only: the query is the frozen model's, without gradient
    assert keys.grad is not None and keys.grad.abs().sum() > 0 and layer.l2p_prompts["default"].grad is None


def test_batchwise_selection_gives_every_image_the_batchs_most_frequent_ids():
    chosen = torch.tensor([[0, 3], [3, 1], [1, 3], [2, 0]])  # counts: 3 → 3, 0 → 2, 1 → 2 (tie: lower id)
    assert batchwise_majority(chosen, pool_size=5).tolist() == [[3, 0]] * 4


def test_the_query_is_the_unprompted_frozen_model_in_eval_mode():
    base = vit()
    reference = copy.deepcopy(base)
    model = get_peft_model(base, DualPromptConfig(num_classes=3, g_layers=[0], e_layers=[1, 2]))
    layer, _ = prompt_layers(model)
    model.train()
    assert torch.equal(layer.query(PIXELS), final_cls(reference)) and layer.base_layer.training


# the prompted forward against an explicit computation


def explicit_block_attention(attention, hidden, key_prefix, value_prefix):
    """softmax(Q [K_p; K]ᵀ / √d) [V_p; V], heads merged, then the output projection."""
    batch, tokens, width = hidden.shape
    heads = 2
    d = width // heads

    def split(x):
        return x.view(batch, -1, heads, d).transpose(1, 2)

    q, k, v = (
        split(attention.q_proj(hidden)),
        split(attention.k_proj(hidden)),
        split(attention.v_proj(hidden)),
    )
    k, v = torch.cat([split(key_prefix), k], 2), torch.cat([split(value_prefix), v], 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
    return attention.o_proj((probs @ v).transpose(1, 2).reshape(batch, tokens, width))


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_prefix_attention_equals_the_explicit_computation(implementation):
    model = vit()
    model.set_attn_implementation(implementation)
    block = model.vit.layers[1]
    hidden = torch.randn(6, 17, 32)
    key_prefix, value_prefix = torch.randn(6, 4, 32), torch.randn(6, 4, 32)
    with torch.no_grad():
        expected = explicit_block_attention(
            block.attention, block.layernorm_before(hidden), key_prefix, value_prefix
        )
        with prompted(model.vit, Prompts(prefixes={1: (key_prefix, value_prefix)})):
            got, _ = block.attention(block.layernorm_before(hidden))
        plain, _ = block.attention(block.layernorm_before(hidden))  # after the block: no prefix
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, got) and model.config._attn_implementation == implementation


def test_l2p_prepends_the_chosen_prompts_after_cls_and_the_head_reads_their_mean():
    base = vit()
    reference = copy.deepcopy(base)
    model = get_peft_model(base, L2PConfig(num_classes=3, pool_size=4, prompt_length=2, top_k=2)).eval()
    layer, head = prompt_layers(model)
    with torch.no_grad():
        chosen, _ = layer.select("default", final_cls(reference))
        tokens = layer.l2p_prompts["default"][chosen].flatten(1, 2)  # (B, 4, D)
        embeddings = reference.vit.embeddings(PIXELS)
        position = reference.vit.embeddings.position_embeddings[:, :1]
        hidden = torch.cat([embeddings[:, :1], tokens + position, embeddings[:, 1:]], dim=1)
        for block in reference.vit.layers:
            hidden = block(hidden)
        pooled = reference.vit.layernorm(hidden)[:, 1:5].mean(1)
        expected = head.heads["default"](pooled)
        torch.testing.assert_close(model(pixel_values=PIXELS).logits, expected, rtol=1e-5, atol=1e-5)


def test_dualprompt_trains_with_the_task_s_e_prompt_and_tests_with_the_best_matching_key():
    model = get_peft_model(vit(), DualPromptConfig(num_classes=3, g_layers=[0], e_layers=[1, 2], e_length=3))
    layer, _ = prompt_layers(model)
    layer.add_task("default")
    layer.add_task("default")
    e_prompts, keys = layer.dualprompt_e["default"], layer.dualprompt_keys["default"]
    assert torch.equal(e_prompts[2], e_prompts[1]) and not torch.equal(keys[2], keys[1])  # copied, key afresh
    query = layer.query(PIXELS)
    model.train()
    chosen, _ = layer.select("default", query)
    assert chosen.tolist() == [2] * len(PIXELS)
    model.eval()
    chosen, surrogate = layer.select("default", query)
    similarity = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T
    assert torch.equal(chosen, similarity.argmax(1))
    assert surrogate.item() == pytest.approx(-similarity.max(1).values.sum().item() / len(query), rel=1e-5)
    prompts = layer.prompts("default", query)
    assert set(prompts.prefixes) == {0, 1, 2}
    g_key, g_value = layer.dualprompt_g["default"][0]
    assert torch.equal(prompts.prefixes[0][0][3], g_key) and torch.equal(prompts.prefixes[0][1][3], g_value)
    b = 4
    assert torch.equal(prompts.prefixes[2][0][b], e_prompts[chosen[b], 1, 0])  # block 2 = E block 1: its keys
    assert torch.equal(prompts.prefixes[2][1][b], e_prompts[chosen[b], 1, 1])  # and values, not reshaped


def test_coda_weights_components_by_cosine_of_attended_query_and_key():
    model = get_peft_model(
        vit(), CODAPromptConfig(num_classes=3, prompt_layers=[0, 2], components_per_task=3)
    )
    layer, _ = prompt_layers(model)
    model.eval()
    query = layer.query(PIXELS)
    prompts = layer.prompts("default", query)
    components, keys, attention = (
        layer.coda_components["default"][1],
        layer.coda_keys["default"][1],
        layer.coda_attention["default"][1],
    )
    for b in range(len(query)):
        alpha = [F.cosine_similarity(query[b] * attention[m], keys[m], dim=0) for m in range(3)]
        prompt = sum(alpha[m] * components[m] for m in range(3))  # (8, D)
        torch.testing.assert_close(prompts.prefixes[2][0][b], prompt[:4], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(prompts.prefixes[2][1][b], prompt[4:], rtol=1e-5, atol=1e-6)


def test_new_coda_components_are_orthonormal_and_orthogonal_to_trained_old_ones():
    old = torch.randn(6, 40, dtype=torch.float32)  # trained rows: not orthogonal to each other
    new = orthogonal_rows(old, 5)
    assert new.shape == (5, 40) and new.dtype == old.dtype
    torch.testing.assert_close(new @ new.T, torch.eye(5), atol=1e-5, rtol=0)
    assert (old @ new.T).abs().max() < 1e-4
    model = get_peft_model(
        vit(), CODAPromptConfig(num_classes=3, prompt_layers=[0, 1], components_per_task=4)
    )
    layer, _ = prompt_layers(model)
    with torch.no_grad():
        for store in (layer.coda_components, layer.coda_keys, layer.coda_attention):
            store["default"].add_(torch.randn_like(store["default"]))  # as if task 0 had trained them
    before = {name: getattr(layer, name)["default"].detach().clone() for name in layer.adapter_layer_names}
    layer.add_task("default")
    for name in layer.adapter_layer_names:
        grown = getattr(layer, name)["default"].detach().flatten(2)
        assert torch.equal(grown[:, :4], before[name].flatten(2))  # old rows kept
        for block in grown:
            assert (block[:4] @ block[4:].T).abs().max() < 1e-4
            torch.testing.assert_close(block[4:] @ block[4:].T, torch.eye(4), atol=1e-5, rtol=0)


def test_coda_orthogonality_penalty_is_the_mean_squared_gram_error():
    rows = torch.randn(4, 7)
    expected = sum((rows[i] @ rows[j] - float(i == j)) ** 2 for i in range(4) for j in range(4)) / 16
    assert orthogonality_penalty(rows).item() == pytest.approx(expected.item(), rel=1e-5)


def test_prompt_methods_refuse_swin_and_options_that_do_not_fit_before_wrapping():
    with pytest.raises(ConfigError, match="model: L2P prompts a ViT .* not a 'swin' model"):
        get_peft_model(tiny_swin(), L2PConfig(num_classes=2))
    with pytest.raises(ConfigError, match=r"e_layers=\[2, 3, 4\]: distinct block indices in 0..1"):
        get_peft_model(tiny_vit(), DualPromptConfig(num_classes=2))
    with pytest.raises(ConfigError, match="top_k at most pool_size"):
        L2PMethodConfig(pool_size=3, top_k=5)
    with pytest.raises(ConfigError, match="surrogate_weight=-1.0 must be ≥ 0"):
        DualPromptMethodConfig(surrogate_weight=-1.0)
    with pytest.raises(ConfigError, match="a G- or an E-prompt, not both"):
        DualPromptMethodConfig(g_layers=[0, 1], e_layers=[1, 2])
    with pytest.raises(ConfigError, match="even prompt length"):
        CODAPromptMethodConfig(prompt_length=5)


def test_a_run_whose_options_do_not_fit_the_model_is_refused_before_anything_is_written(
    six_class_splits, tmp_path
):
    stream = TaskStream(*six_class_splits, n_tasks=3, seed=3, augmentation=NO_AUGMENTATION)
    for trainer_class, config, message in (
        (DualPromptTrainer, DualPromptMethodConfig(), r"e_layers=\[2, 3, 4\]: .* the model has 2 blocks"),
        (
            CODAPromptTrainer,
            CODAPromptMethodConfig(prompt_layers=[0], components_per_task=11),
            "33 keys per block",
        ),
    ):
        trainer = trainer_class(
            model=tiny_vit(),
            args=tiny_args(tmp_path),
            method_config=config,
            processing_class=tiny_processor(),
        )
        with pytest.raises(ConfigError, match=message):
            trainer.fit(stream)
        assert not any(tmp_path.iterdir())


# through the trainer


def fit(trainer_class, config, splits, output_dir, n_tasks=3, **args):
    torch.manual_seed(0)
    model = tiny_vit()
    initial = copy.deepcopy(model.state_dict())
    stream = TaskStream(*splits, n_tasks=n_tasks, seed=3, augmentation=NO_AUGMENTATION)
    options = dict(max_steps=3, learning_rate=0.05, **args)
    trainer = trainer_class(
        model=model,
        args=tiny_args(output_dir, **options),
        method_config=config,
        processing_class=tiny_processor(),
    )
    result = trainer.fit(stream)
    return trainer, stream, initial, result


METHODS = {
    "l2p": (L2PTrainer, L2PMethodConfig(pool_size=4, prompt_length=2, top_k=2)),
    "dualprompt": (DualPromptTrainer, DualPromptMethodConfig(g_layers=[0], e_layers=[1], e_length=3)),
    "coda_prompt": (
        CODAPromptTrainer,
        CODAPromptMethodConfig(
            prompt_layers=[0, 1], components_per_task=3, prompt_length=4, orthogonality_weight=0.1
        ),
    ),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_backbone_stays_bit_identical_and_each_checkpoint_reloads_with_the_same_logits(
    method, six_class_splits, tmp_path
):
    trainer_class, config = METHODS[method]
    trainer, stream, initial, result = fit(
        trainer_class, config, six_class_splits, tmp_path, weight_decay=0.1
    )
    prefix = trainer.model.base_model.prefix
    backbone = {
        name.replace("base_model.model.", "").replace("base_layer.", ""): tensor
        for name, tensor in trainer.model.state_dict().items()
        if prefix not in name
    }
    assert all(torch.equal(backbone[name], tensor) for name, tensor in initial.items())
    saved_base = AutoModelForImageClassification.from_pretrained(tmp_path / "base").state_dict()
    assert all(torch.equal(saved_base[name], tensor) for name, tensor in initial.items())

    batch = stream.tasks[0].test_dataset(tiny_processor())[:]["pixel_values"]
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(pixel_values=batch).logits
        loaded = load_task_model(tmp_path, 2)
        assert list(loaded.config.id2label.values()) == stream.class_names
        assert torch.equal(loaded(pixel_values=batch).logits, expected)
        plain = PeftModel.from_pretrained(
            AutoModelForImageClassification.from_pretrained(tmp_path / "base"), tmp_path / "task-2"
        ).eval()
        assert torch.equal(plain(pixel_values=batch).logits, expected)
        first = load_task_model(tmp_path, 0)(pixel_values=batch).logits
    assert first.shape == (len(batch), 2) and expected.shape == (len(batch), 6)
    additions = result.info["task_additions"]
    assert [a["adapter_parameters"] for a in additions] == sorted(a["adapter_parameters"] for a in additions)
    assert all(a["adapter_bytes"] == 4 * a["adapter_parameters"] for a in additions)


@pytest.mark.parametrize("method", ["dualprompt", "coda_prompt"])
def test_what_a_method_freezes_stays_bit_identical_through_later_tasks(method, six_class_splits, tmp_path):
    """Weight decay would move every entry the optimizer holds: the frozen ones must not move at all."""
    trainer_class, config = METHODS[method]
    frozen_after_task = {}

    class Recording(trainer_class):
        def end_task(self, task):
            super().end_task(task)
            layer, _ = prompt_layers(self.model)
            frozen_after_task[task.index] = {
                name: getattr(layer, name)["default"].detach().clone() for name in layer.adapter_layer_names
            }

    fit(Recording, config, six_class_splits, tmp_path, weight_decay=0.5)
    for task in (1, 2):
        before, after = frozen_after_task[task - 1], frozen_after_task[task]
        for name in before:
            if name == "dualprompt_g":  # the G-prompt trains throughout
                assert not torch.equal(after[name], before[name]), (task, name)
                continue
            if method == "dualprompt":  # the earlier tasks' E-prompts and keys
                kept, grown = after[name][: len(before[name])], after[name][len(before[name]) :]
            else:  # the earlier tasks' components, keys and attention vectors
                kept, grown = after[name][:, : before[name].shape[1]], after[name][:, before[name].shape[1] :]
            assert torch.equal(kept, before[name]), (task, name)
            assert grown.numel() and grown.abs().sum() > 0


def test_the_surrogate_loss_enters_the_training_loss_with_its_weight(six_class_splits, tmp_path):
    trainer_class, config = METHODS["l2p"]
    trainer, stream, _, _ = fit(trainer_class, config, six_class_splits, tmp_path, n_tasks=1)
    trainer.model.train()
    batch = stream.tasks[0].train_dataset(tiny_processor())[:4]
    inputs = {"pixel_values": batch["pixel_values"], "labels": batch["labels"]}
    losses = {}
    for weight in (0.0, 2.0):
        trainer.method_config.surrogate_weight = weight
        losses[weight] = trainer.compute_loss(trainer.model, inputs).item()
    layer, _ = prompt_layers(trainer.model)
    assert layer.auxiliary_loss.item() < 0  # −Σ cos: the chosen keys point towards the queries
    assert losses[2.0] - losses[0.0] == pytest.approx(2.0 * layer.auxiliary_loss.item(), rel=1e-4, abs=1e-6)
