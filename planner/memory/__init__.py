"""Per-GPU and per-node memory terms. One module per kind of term; `breakdown` composes them."""
