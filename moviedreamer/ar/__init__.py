"""The autoregressive keyframe model (docs/ar.md).

    embed.py    the multimodal script as one sequence (character sheet, shot scripts, keyframe tokens)
    model.py    ARModel: transformers LlamaModel over `inputs_embeds` + MLP projections + GMM head
    gmm.py      the Gaussian-mixture head: parameters, NLL, sampling
    sample.py   RollingSampler (rolling-window KV cache) and ARPlanner (the pipeline's Planner)
    tokens.py   where keyframe tokens come from (precomputed in the shards, or the frozen keyframe tokenizer)
    standins.py tiny random models and scripts for tests and benchmarks

Submodules import torch and transformers; importing this package does not.
"""
