"""Train a ViT or Swin on a stream of tasks and print its accuracy matrix.

    accelerate launch -q recipes/train.py                                  # embedded Split Digits default
    accelerate launch -q recipes/train.py --config recipes/configs/finetune_cifar10.yaml
    accelerate launch -q recipes/train.py --method joint --n_tasks 5 --num_train_epochs 3

`--help` lists every option (model, data, `TrainingArguments`, and the chosen method's config).
"""

from hf_vitcl.cli import main

if __name__ == "__main__":
    main()
