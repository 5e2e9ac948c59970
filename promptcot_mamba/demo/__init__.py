"""The laptop-scale reproduction of the paper (`pcm demo`): a built-in arithmetic domain, its
PromptCoT curriculum through the real synthesis stages, two-phase training of Mamba-2 and a same-size
Llama, held-out evaluation, decode efficiency against length, and the report. Entry: `pipeline.run_demo`."""
