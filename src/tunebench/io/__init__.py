"""The bottom layer: files and places. `files`: reading the user's records (JSONL, CSV, TSV,
Parquet) with one-line errors; `yamlfile`: YAML read strictly, with the line of every key;
`locations`: the data root and when a name means the Hub; `layout`: the run directory as a typed
layer (file names, a recipe run's stage directories, what kind of run a directory is, the rows
that flow between stages, each stage's recorded config); `runs`: manifests, atomic writes,
journals and the environment; `processes`: a torchrun / accelerate launch as evaluation sees it
(each process's share of the examples, the gather, one journal per process read as one); `memory`:
the allocator and peak-memory windows. Imports nothing of tunebench's but `errors`."""
