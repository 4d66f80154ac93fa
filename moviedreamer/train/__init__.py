"""The DeepSpeed training harness shared by every stage (`moviedreamer train STAGE --config FILE`).

- `config`  — the stage config (YAML, pydantic) + the DeepSpeed JSON, `key=value` overrides, memory plan
- `dist`    — process-group set-up: launcher env or a plain single process (gloo on CPU, NCCL on CUDA)
- `data`    — a seeded, rank-sharded, resumable stream over the shard format (docs/data_format.md)
- `harness` — the loop: deepspeed.initialize, backward/step, checkpoints, resume, logs, final export
- `stages/` — one small module per model (`vae`, later `clip`, `tokenizer`, `ar`, `i2v`)

Nothing heavy (torch, deepspeed) is imported by this package at import time.
"""
