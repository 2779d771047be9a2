"""What people read: `compare` (two evaluation runs, or recipe runs side by side), `forgetting`
(two benchmark runs: paired bootstrap and Holm-adjusted verdicts per task), `html` (one
self-contained HTML report with plots). Reads run directories through `tunebench.io.layout`."""
