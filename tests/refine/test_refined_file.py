import numpy as np
import pytest

from ctsam.errors import InputDataError
from ctsam.refine.refined_file import RefinedCase, StructureProbability, load_refined, probs_to_u8, save_refined
from ctsam.volume import Geometry


def make_case() -> RefinedCase:
    g = Geometry(shape_zyx=(10, 12, 14), spacing_xyz_mm=(1, 1, 2), origin_xyz_mm=(0, 0, 0))
    p = probs_to_u8(np.linspace(0, 1, 2 * 3 * 4).reshape(2, 3, 4))
    return RefinedCase(
        geometry=g,
        structures=[StructureProbability("liver", (1, 2, 3), p, quality=0.9, n_decodes=3, n_patches=2)],
        skipped={"spleen": "empty coarse mask"},
        meta={"checkpoint_sha256": "ab"},
    )


def test_roundtrip_and_deterministic(tmp_path):
    save_refined(tmp_path / "a.npz", make_case())
    save_refined(tmp_path / "b.npz", make_case())
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = load_refined(tmp_path / "a.npz")
    s = back.structures[0]
    assert s.name == "liver" and s.bbox_stop_zyx == (3, 5, 7) and s.quality == pytest.approx(0.9)
    assert np.array_equal(s.probs_u8, make_case().structures[0].probs_u8)
    assert back.skipped == {"spleen": "empty coarse mask"}
    assert back.geometry.same_space(make_case().geometry)


def test_corrupt_refined(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(InputDataError, match="unreadable"):
        load_refined(tmp_path / "bad.npz", case="c1")
