"""Training-step time and peak memory of each method as a ratio to fine-tuning, measured in one run on
the same model and data. Each method runs in its own process: two tasks of Split Digits (or any
benchmark), a few warm-up steps, then `--steps` timed optimizer steps of the second task, where the
penalties, teachers, attention recorders, ARCL's gradient masking, second adapters, LPA and the prompt
methods' query forward are active
(the adapters train the base on the first task, so task 2 is the frozen-base step of every later task).
`--repeats` rounds over all methods, in rotated order; each figure is a method's median over the rounds.

    python recipes/benchmark_overhead.py                       # micro-sized ViT-Ti at 32x32 on CPU
    python recipes/benchmark_overhead.py --model base --image_size 224 --bf16   # on a GPU

Memory is the peak during the timed steps minus what the process held before training began: CUDA's
peak allocated memory on a GPU, the resident set size (sampled every millisecond) on a CPU. So it
counts what a method adds — a teacher copy, importances, recorded maps — on top of the same model.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time

# name: (method, its config, whether every block gets Locality-Preserved Attention)
VARIANTS = {
    "finetune": ("finetune", {}, False),
    "ewc": ("ewc", {}, False),
    "si": ("si", {}, False),
    "mas": ("mas", {}, False),
    "lwf": ("lwf", {}, False),
    "pad attention asym": ("pad", {"target": "attention", "asymmetric": True}, False),
    "pad attention sym": ("pad", {"target": "attention", "asymmetric": False}, False),
    "pad functional asym": ("pad", {"target": "functional", "asymmetric": True}, False),
    "pad functional sym": ("pad", {"target": "functional", "asymmetric": False}, False),
    "piggyback": ("piggyback", {"train_base_on_first_task": True}, False),
    "rkr": ("rkr", {"train_base_on_first_task": True}, False),
    "mask_rkr": ("mask_rkr", {"train_base_on_first_task": True}, False),
    "kd": ("kd", {}, False),
    "finetune + lpa": ("finetune", {}, True),  # LPA in every block
    "arcl accumulated": ("arcl", {"mask_mode": "accumulated"}, False),  # the paper's trainable set
    "arcl teacher": ("arcl", {"mask_mode": "teacher"}, False),
    "arcl accumulated, all": ("arcl", {"mask_mode": "accumulated", "trainable": "all"}, False),
    "arcl teacher, all": ("arcl", {"mask_mode": "teacher", "trainable": "all"}, False),
    "l2p": ("l2p", {}, False),  # frozen backbone: the query forward, then the prompted one
    "dualprompt": ("dualprompt", {}, False),
    "coda_prompt": ("coda_prompt", {}, False),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _MemoryPeak:
    """Peak memory from `start()` on: CUDA's counter, or RSS sampled by a thread."""

    def __init__(self, cuda: bool):
        self.cuda, self.peak, self._sampling = cuda, 0, False

    def start(self):
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        self._sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while self._sampling:
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def stop(self) -> int:
        import torch

        if self.cuda:
            return torch.cuda.max_memory_allocated()
        self._sampling = False
        return self.peak


def measure(name: str, options: argparse.Namespace) -> tuple[str, float, float]:
    """(name, median seconds per timed step, peak memory growth in MB) for one method."""
    import torch
    from transformers import TrainerCallback, set_seed

    from hf_vitcl import ContinualTrainingArguments, TaskStream, load_model
    from hf_vitcl.attention import apply_lpa
    from hf_vitcl.methods import TaskIncrementalTrainer, get_method

    method, config, lpa = VARIANTS[name]
    trainer_class = get_method(method)
    cuda = torch.cuda.is_available() and not options.cpu
    set_seed(0)
    # The adapters need the task id; the scenario changes nothing in the other methods' training step.
    til = issubclass(trainer_class, TaskIncrementalTrainer)
    stream = TaskStream.from_benchmark(
        options.benchmark,
        dataset=options.dataset,
        n_tasks=options.tasks,
        seed=0,
        scenario="task-incremental" if til else "class-incremental",
    )
    model, processor = load_model(options.model, options.arch, options.image_size)
    if lpa:
        model = apply_lpa(model, layers=range(model.config.num_hidden_layers))
    baseline = torch.cuda.memory_allocated() if cuda else _rss_bytes()
    memory = _MemoryPeak(cuda)
    durations: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if trainer.task.index == 1 and state.global_step == options.warmup:
                memory.start()
            if cuda:
                torch.cuda.synchronize()
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            if trainer.task.index == 1 and state.global_step > options.warmup:
                durations.append(time.perf_counter() - self.began)

    with tempfile.TemporaryDirectory() as output_dir:
        args = ContinualTrainingArguments(
            output_dir=output_dir,
            max_steps=options.warmup + options.steps,
            learning_rate=1e-3,
            per_device_train_batch_size=options.batch_size,
            per_device_eval_batch_size=options.batch_size,
            use_cpu=not cuda,
            bf16=options.bf16,
            disable_tqdm=True,
            logging_strategy="no",
            save_task_checkpoints=False,
            seed=0,
            dataloader_num_workers=options.workers,
        )
        trainer = trainer_class(
            model=model,
            args=args,
            processing_class=processor,
            method_config=trainer_class.config_class(**config),
        )
        trainer.add_callback(StepTimer())
        trainer.fit(stream)
    peak = memory.stop()
    return name, statistics.median(durations), max(peak - baseline, 0) / 2**20


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--benchmark", default="split-digits")
    parser.add_argument("--dataset", default=None, help="local copy of the benchmark's data")
    parser.add_argument("--model", default="tiny", help="from-scratch size or checkpoint")
    parser.add_argument("--arch", default="vit")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=2, help="tasks in the stream; task 2 is timed")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of the second task")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all methods (median kept)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    options = parser.parse_args()
    names = ["finetune"] + [name for name in options.methods if name != "finetune"]

    # Rounds over all methods in rotated order; each method's median over the rounds, so that a burst of
    # load on the machine moves one sample of every method rather than all samples of one.
    context = multiprocessing.get_context("spawn")
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_index in range(options.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            with context.Pool(1) as pool:
                samples[name].append(pool.apply(measure, (name, options))[1:])
    rows = [
        (name, statistics.median(t for t, _ in values), statistics.median(m for _, m in values))
        for name, values in samples.items()
    ]
    base_time, base_memory = rows[0][1], rows[0][2]
    import torch

    device = "GPU" if torch.cuda.is_available() and not options.cpu else "CPU"
    print(
        f"\n{options.model} {options.arch} at {options.image_size}px, batch {options.batch_size}, "
        f"{options.steps} timed steps of task 2, {device}"
    )
    print(f"{'method':<22}{'s/step':>10}{'time ×':>9}{'memory MB':>12}{'memory ×':>10}")
    for name, seconds, megabytes in rows:
        memory_ratio = megabytes / base_memory if base_memory > 0 else float("nan")
        print(f"{name:<22}{seconds:>10.4f}{seconds / base_time:>9.2f}{megabytes:>12.1f}{memory_ratio:>10.2f}")


if __name__ == "__main__":
    main()
