"""Benchmarks: tasks as data and where they come from (`tasks`: the registry and suites; `bigbench`:
BIG-bench JSON files as BIG-bench reads them; `declared`: MMLU, GLUE and SuperGLUE from
`registry/*.yaml`), log-likelihood and generation scoring (`scoring`), BIG-bench's own metrics
(`bigbench_metrics`), HELM's perturbations (`perturbations`), and the harness that runs a model
over tasks and writes a benchmark run (`harness`). Imports models, generation, metrics, io; the
forgetting comparison of two benchmark runs is a report (`tunebench.reports.forgetting`)."""
