"""Script encoders: the multimodal story script becomes tokens and embeddings here.

    text tokenizer   identifiers → token ids           text.load_text_tokenizer
    descriptors      free text → [N, D] (≤248 tokens)  longclip.DescriptorEncoder.encode
    vision           images → pooled + patch tokens     clip_vision.VisionEncoder.encode_image
    faces            face images → ArcFace embeddings   faces.FaceEmbedder

Each has one interface and a backend per format of checkpoints.yaml (toy weights in the package, real weights from
local folders). Each loader takes a folder path; the composition root (moviedreamer/pipeline/profile.py) picks the
folders from the profile and loads each encoder once.
"""
