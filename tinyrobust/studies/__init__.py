"""The studies: `robustness` (TinyML vs large models, `--mode=study`) and
`search` (hand-crafted vs robust search, `--mode=search_study`)."""
