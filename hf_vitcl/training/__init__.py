"""The continual training core: `trainer` (the task loop and the loss, `ContinualTrainer`), `hooks` (what a
method may override, and its declared state), `plugins` (the interface of cross-cutting features),
`arguments` (`ContinualTrainingArguments`, `MethodConfig`), `optimization` (parameter groups and scaled
steps) and `resume` (the run state on disk and its checks). The public names are exported by `hf_vitcl`."""
