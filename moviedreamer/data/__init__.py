"""Training data from real videos: `moviedreamer prepare-data` (docs/data_format.md, docs/prepare_data.md).

    video ─► cuts (PySceneDetect ContentDetector) ─► per shot: keyframe (its first frame), a clip at the training
          fps, optical flow (OpenCV DIS) ─► faces on keyframes (insightface pack) ─► clustered into characters
    captions sidecar (SRT / JSON / YAML) ─► per-shot descriptors ─► the episode's script (user story format)

One video becomes one episode, in the same shards the toy world writes, so every training stage streams both.
"""
