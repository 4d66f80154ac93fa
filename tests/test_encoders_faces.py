"""Faces: insightface packs of tiny ONNX models load through `model_zoo` exactly like real ones; the toy ArcFace
export is faithful; no face / several faces / tiny faces / no detector have defined behaviour; caching; errors."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from encoder_standins import make_insightface_pack
from moviedreamer.encoders.faces import Detection, FaceEmbedder, load_face_pack
from moviedreamer.errors import CheckpointError, UserError


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return make_insightface_pack(tmp_path_factory.mktemp("buffalo_l"), "buffalo_l", extras=True)


@pytest.fixture(scope="module")
def faces(pack):
    return load_face_pack(pack, det_size=(256, 256))


def _frame(*squares, size=256):
    """Black frame with bright squares: the stand-in SCRFD 'sees' a face in each."""
    img = np.zeros((size, size, 3), np.uint8)
    for x, y, s in squares:
        img[y : y + s, x : x + s] = 255
    return img


class StubFinder:
    def __init__(self, boxes):
        self.boxes = boxes

    def find_faces(self, image):
        return [Detection(np.array(b, np.float32), 0.9) for b in self.boxes]


def _save(tmp_path, name, img):
    path = tmp_path / name
    Image.fromarray(img).save(path)
    return path


def test_pack_models_are_routed_by_insightface(faces):
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.scrfd import SCRFD

    assert isinstance(faces.recognizer.model, ArcFaceONNX)
    assert isinstance(faces.finder.model, SCRFD)
    assert (faces.recognizer.model.input_mean, faces.recognizer.model.input_std) == (127.5, 127.5)
    assert faces.recognizer.input_size == 112 and faces.embed_dim == 64
    crops = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)  # any size: resized to 112
    emb = faces.embed_crops(crops)
    assert emb.shape == (3, 64) and torch.allclose(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb[1], faces.embed_crops([crops[1]])[0])
    assert faces.embed_crops([]).shape == (0, 64)


def test_onnx_export_equals_the_torch_net(tmp_path):
    """The exported recognizer, fed by insightface (BGR image, its own normalisation), equals the torch net on the
    RGB crop normalised by `arcface.normalize_crops`: the toy training and insightface agree on the input."""
    from insightface.model_zoo import get_model

    from moviedreamer.encoders.arcface import ToyArcFaceNet, export_onnx, normalize_crops

    torch.manual_seed(1)
    net = ToyArcFaceNet(embed_dim=32, width=8).eval()
    model = get_model(str(export_onnx(net, tmp_path / "rec_toy.onnx")), providers=["CPUExecutionProvider"])
    rgb = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    got = model.get_feat([np.ascontiguousarray(c[:, :, ::-1]) for c in rgb])
    with torch.no_grad():
        want = net(normalize_crops(torch.from_numpy(rgb).permute(0, 3, 1, 2)))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_arcface_margin_lowers_only_the_true_class_logit():
    from moviedreamer.encoders.arcface import AdditiveAngularMarginLoss

    torch.manual_seed(0)
    loss = AdditiveAngularMarginLoss(8, 5, scale=10.0, margin=0.5)
    emb, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    logits = loss.logits(emb, labels)
    plain = 10.0 * torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(loss.weight).T
    true = torch.arange(4), labels
    assert (logits[true] < plain[true]).all()
    mask = torch.ones_like(plain, dtype=torch.bool)
    mask[true] = False
    torch.testing.assert_close(logits[mask], plain[mask])
    loss(emb, labels).backward()
    assert torch.isfinite(loss.weight.grad).all()


def test_detect_and_embed_through_scrfd(faces):
    assert faces.detect_and_embed(_frame()) == []
    one = faces.detect_and_embed(_frame((0, 0, 64)))
    assert len(one) == 1 and one[0].kps.shape == (5, 2) and one[0].score > 0.5
    two = faces.detect_and_embed(_frame((0, 0, 64), (192, 192, 64)))
    assert len(two) == 2
    for f in two:
        assert f.embedding.shape == (64,) and torch.isfinite(f.embedding).all()
        assert abs(float(f.embedding.norm()) - 1) < 1e-5
    # the same crop through insightface's FaceAnalysis gives the same embedding: a real pack, really
    from insightface.app import FaceAnalysis

    app = FaceAnalysis(name=str(faces.recognizer.model.model_file.rsplit("/", 1)[0]), providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=-1, det_size=(256, 256))
    ref = app.get(np.ascontiguousarray(_frame((0, 0, 64))[:, :, ::-1]))
    np.testing.assert_allclose(ref[0].normed_embedding, one[0].embedding.numpy(), atol=1e-5)


def test_reference_no_face_several_faces(faces, tmp_path, caplog):
    with pytest.raises(UserError, match="no face found") as err:
        faces.embed_reference(_save(tmp_path, "blank.png", _frame()))
    assert "blank.png" in str(err.value)
    emb = faces.embed_reference(_save(tmp_path, "two.png", _frame((0, 0, 64), (192, 192, 64))))
    assert emb.shape == (64,)
    assert "2 faces found" in caplog.text and "two.png" in caplog.text


def test_several_faces_take_the_largest_and_tiny_faces_are_refused(faces, tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    path = _save(tmp_path, "ref.png", img)
    big, small = [10, 10, 90, 100], [100, 20, 130, 50]
    stub = FaceEmbedder(faces.recognizer, StubFinder([small, big]))
    emb = stub.embed_reference(path)
    only_big = FaceEmbedder(faces.recognizer, StubFinder([big])).embed_reference(path)
    torch.testing.assert_close(emb, only_big)

    tiny = FaceEmbedder(faces.recognizer, StubFinder([[5, 5, 17, 15]]))
    with pytest.raises(UserError, match=r"12x10 px, smaller than the 16 px minimum") as err:
        tiny.embed_reference(path)
    assert "ref.png" in str(err.value)
    mixed = FaceEmbedder(faces.recognizer, StubFinder([[5, 5, 17, 15], big]))
    found = mixed.detect_and_embed(img)
    assert len(found) == 1 and found[0].bbox.tolist() == big  # the tiny one is not embedded
    with pytest.raises(UserError, match="smaller than 16 px"):
        faces.embed_crops([img[:10, :10]])


def test_reference_is_encoded_once_per_file_version(faces, tmp_path):
    fe = FaceEmbedder(faces.recognizer, faces.finder)
    calls = []
    embed = fe.recognizer.embed_crops
    fe.recognizer = type("Counting", (), {"embed_crops": lambda self, c: (calls.append(len(c)), embed(c))[1],
                                           "crop": faces.recognizer.crop, "embed_dim": 64})()
    path = _save(tmp_path, "mia.png", _frame((0, 0, 64)))
    a = fe.embed_reference(path)
    b = fe.embed_reference(tmp_path / "." / "mia.png")
    assert len(calls) == 1 and torch.equal(a, b)
    Image.fromarray(_frame((64, 64, 64))).save(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fe.embed_reference(path)
    assert len(calls) == 2  # an edited file is encoded again


def test_pack_without_detector_embeds_the_whole_reference(tmp_path):
    fe = load_face_pack(make_insightface_pack(tmp_path / "toy", "antelopev2", detector=False))
    assert fe.finder is None
    crop = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    emb = fe.embed_reference(_save(tmp_path, "face.png", crop))
    torch.testing.assert_close(emb, fe.embed_crops([crop])[0])
    with pytest.raises(UserError, match="no face detector"):
        fe.detect_and_embed(crop)
    with pytest.raises(UserError, match="smaller than the 16 px"):
        fe.embed_reference(_save(tmp_path, "small.png", crop[:8, :8]))


def test_antelopev2_layout_and_inputs(tmp_path):
    fe = load_face_pack(make_insightface_pack(tmp_path / "antelopev2", "antelopev2"), det_size=(128, 128))
    frame = _frame((0, 0, 64), size=128)
    as_tensor = torch.from_numpy(frame).permute(2, 0, 1).float() / 255
    a, b = fe.detect_and_embed(frame), fe.detect_and_embed(as_tensor)
    assert len(a) == len(b) == 1
    torch.testing.assert_close(a[0].embedding, b[0].embedding)


def test_bad_packs_name_what_is_expected(tmp_path, pack, faces):
    with pytest.raises(CheckpointError, match="no such folder"):
        load_face_pack(tmp_path / "antelopev2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"expected \.onnx files.*w600k_r50\.onnx"):
        load_face_pack(tmp_path / "empty")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "w600k_r50.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(CheckpointError, match="w600k_r50.onnx: expected a valid ONNX model"):
        load_face_pack(corrupt)
    det_only = tmp_path / "det_only"
    det_only.mkdir()
    (det_only / "det_10g.onnx").write_bytes((pack / "det_10g.onnx").read_bytes())
    with pytest.raises(CheckpointError, match="expected a recognition model.*found none among det_10g.onnx"):
        load_face_pack(det_only)
    with pytest.raises(UserError, match="cannot be read"):
        FaceEmbedder(faces.recognizer).embed_reference(_save_bytes(tmp_path / "face.png", b"not an image"))


def _save_bytes(path, data):
    path.write_bytes(data)
    return path
