"""The paper's experiments as library functions: the whole study (E1-E5 with claim verdicts) and the
remove-a-class experiment (E2b). They orchestrate training, evaluation and analysis; the CLI calls them."""
