"""Interop with other ecosystems' checkpoints.

`lm.interop.hf` reads and writes Hugging Face model directories (GPT-2,
Llama, BERT) through safetensors, with the per-family tensor mappings in
`gpt2`, `llama` and `bert`; `lm.interop.workdir` turns them into `lm`
workdirs and back (`launch.import_hf`, `launch.export_hf`).
"""
