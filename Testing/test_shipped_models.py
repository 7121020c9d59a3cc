"""The shipped models and the main job, end to end (the slow tests on the real models)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import BRAIN2, CT_ISO, CT_NATIVE

from CLADE.errors import CladeError
from CLADE.pipeline import super_resolve
from CLADE.registry import MANIFEST_PATH, read_manifest, resolve_model, sha256_of

# The real shipped models: slow, and given every core.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("all_cores")]


def test_mri_and_ct_are_shipped_with_matching_checksums():
    entries = {entry["name"]: entry for entry in read_manifest()}
    assert {"mri", "ct"} <= set(entries)
    for name, entry in entries.items():
        path = MANIFEST_PATH.parent / entry["file"]
        assert sha256_of(path) == entry["sha256"]
        model = resolve_model(name)
        assert model.trained and model.metadata["name"] == name
        assert model.default_stride == entry["default_stride"]
        assert next(model.generator.parameters()).dtype.is_floating_point


# The default tiling (whole slices) on MRI, the paper's patches on CT: both paths on a real model.
@pytest.mark.parametrize(
    "name,source,crop,options",
    [
        ("mri", BRAIN2, (slice(16, 80), slice(16, 80), slice(None)), {}),
        ("ct", CT_NATIVE, (slice(100, 164), slice(72, 136), slice(None)), {"stride": 16}),
    ],
    ids=["mri-slices", "ct-patches"],
)
def test_shipped_model_super_resolves_a_real_volume(test_data, name, source, crop, options):
    image = sitk.ReadImage(str(test_data / source))[crop]
    before = sitk.GetArrayFromImage(image).copy()
    result = super_resolve(image, resolve_model(name), device="cpu", **options)
    assert result.stats["tiling"] == ("patches" if options else "slices")
    out = sitk.GetArrayFromImage(result.image)
    assert np.isfinite(out).all()
    assert result.image.GetSize()[:2] == image.GetSize()[:2]
    extent = image.GetSize()[2] * image.GetSpacing()[2]
    assert result.image.GetSize()[2] * result.image.GetSpacing()[2] == pytest.approx(extent)
    assert result.image.GetDirection() == pytest.approx(image.GetDirection())
    # A trained model returns an image of the input, not noise: close to the spline baseline.
    from CLADE.geometry import resample_to_isotropic

    spline = sitk.GetArrayFromImage(resample_to_isotropic(image, 2))
    correlation = np.corrcoef(out.ravel(), spline.ravel())[0, 1]
    assert correlation > 0.9
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), before)


def test_a_tampered_shipped_model_is_refused(tmp_path):
    entry = next(e for e in read_manifest() if e["name"] == "mri")
    copy = tmp_path / entry["file"]
    shutil.copy(MANIFEST_PATH.parent / entry["file"], copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte changed
    copy.write_bytes(bytes(data))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"models": [entry]}))
    with pytest.raises(CladeError, match="does not match its checksum"):
        resolve_model("mri", manifest_path=manifest)


def test_clade_demo_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "CLADE", "demo", "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert "random (untrained)" not in result.stderr
    volume = sitk.ReadImage(str(out / "pelvis_t2_clade.nii.gz"))
    assert volume.GetSize() == (160, 160, 84)
    rows = json.loads((out / "metrics.json").read_text())
    names = json.dumps(rows)
    assert "spline" in names and "CLADE (mri)" in names
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "Done in" in result.stdout


def test_shipped_ct_model_and_its_adaptation_beat_spline_on_held_out_ground_truth(test_data):
    # The 3 mm isotropic abdominal CT was never trained on (model card): simulated at 9 mm, the
    # shipped model must restore it better than cubic spline does. A model that collapsed to
    # the identity (or learnt nothing) ties with spline and fails.
    from CLADE.adaptation import adapt_to_volume
    from CLADE.evaluation import prepare_comparison
    from CLADE.metrics.reference import psnr
    from CLADE.simulate import simulate_thick_slices

    iso = sitk.ReadImage(str(test_data / CT_ISO), sitk.sitkFloat32)
    iso = iso[1:81, 0:80, :]  # a central 80 x 80 block of every slice keeps the test quick
    thick = simulate_thick_slices(iso, 9.0)
    model = resolve_model("ct")
    # The shipped model as it is (whole slices, no adaptation), as the model card measures it.
    result = super_resolve(thick, model, device="cpu", adapt_steps=0)
    assert result.stats["adapt_steps"] == 0 and result.adaptation is None
    # Adapting the shipped model to this very volume (its own degraded in-plane slices, no
    # reference involved) must restore it better still (+0.21 dB measured at 100 steps). The
    # safeguard does not keep it here: the held-back error blurred along the other in-plane
    # direction falls by only a quarter of the trained direction's gain (models/cards/
    # adaptation.md: its price on small crops), so the adapted candidate itself is measured.
    adapted = adapt_to_volume(thick, model, steps=100, device="cpu")
    assert adapted.candidate is not None and adapted.error_after < adapted.error_before
    adapted_result = super_resolve(thick, adapted.candidate, device="cpu", adapt_steps=0)
    comparison = prepare_comparison(
        thick, [("ct", result.image), ("ct adapted", adapted_result.image)], reference=iso
    )
    spline, clade, clade_adapted, reference = (sitk.GetArrayFromImage(i) for i in comparison.images)
    gain = psnr(reference, clade) - psnr(reference, spline)
    assert gain > 0.3, f"shipped ct model: {gain:+.2f} dB over spline"
    adaptation_gain = psnr(reference, clade_adapted) - psnr(reference, clade)
    assert adaptation_gain > 0.05, f"adaptation: {adaptation_gain:+.2f} dB over the shipped model"
