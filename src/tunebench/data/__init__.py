"""Records in, prompt/completion examples out. `templates`: the prompt-template library (tasks
declared in YAML, rendered in Jinja's sandbox); `examples`: splits, validation and the prepared
files every later stage reads; `sources`: a library task's training pool from its declared files;
`mixtures`: FLAN-style multi-task training sets; `contamination`: n-gram overlap of training
examples with evaluation texts. Imports config and io only: what a benchmark scores (rows to keep
out of training, texts to check against) is handed in by the pipeline."""
