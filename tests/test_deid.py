"""DICOM de-identification (medimg.deid, the ``deid`` operation, ``medimg deid``) on real DICOM files with
planted identifiers: every planted string must be gone from every output byte, UIDs new and consistent,
pixel data and geometry identical, dates shifted consistently, bad inputs refused without partial output."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.deid import DeidError, Mapping, deidentify, parse_profile
from medimg.deid.table import BY_TAG, TABLE_E1_1
from medimg.errors import MedimgError
from medimg.ops import Context, run

from conftest import DATA, SHARED, needs_shared

#: What gets planted, by attribute; each string must vanish from the output bytes.
PLANTED = {
    "PatientName": "Smithson^Johanna",
    "PatientID": "PID884422",
    "PatientBirthDate": "19610317",
    "InstitutionName": "Riverside General Hospital",
    "InstitutionAddress": "12 Harbour Lane Springfield",
    "ReferringPhysicianName": "Okonkwo^Adaeze",
    "PerformingPhysicianName": "Valdivia^Ramon",
    "OperatorsName": "Lindqvist^Sven",
    "AccessionNumber": "ACC7781234",
    "PatientTelephoneNumbers": "+1 555 0147 2290",
    "PatientAddress": "77 Birchwood Crescent",
    "OtherPatientIDs": "MRN5550199",
    "StudyDescription": "CT chest Smithson follow-up",
}
PRIVATE_TEXT = "Note for Johanna Smithson"
NESTED_NAMES = ("Castellano^Bruno", "Marchetti^Giulia")
#: Strings (and name parts) that must be absent from every output byte.
MUST_VANISH = [
    *(v for k, v in PLANTED.items() if k != "StudyDescription"),
    "PID8844",
    "Smithson",
    "Johanna",
    "Okonkwo",
    "Valdivia",
    "Lindqvist",
    "Riverside",
    "Harbour",
    "Birchwood",
    PRIVATE_TEXT,
    *NESTED_NAMES,
    "Castellano",
    "Marchetti",
]


def plant(ds: Dataset, other_sop: str | None = None, patient: int = 0) -> None:
    """Plant identifiers into ``ds``: public attributes, a private tag with a name, names inside sequences;
    ``patient`` varies the PatientID (PID884422, PID884423 ...)."""
    for kw, value in PLANTED.items():
        setattr(ds, kw, value)
    ds.PatientID = f"PID8844{22 + patient}"
    ds.StudyDate = "20210405"
    ds.AcquisitionDate = "20210406"
    block = ds.private_block(0x0011, "ACME HOSPITAL", create=True)
    block.add_new(0x01, "LO", PRIVATE_TEXT)
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = other_sop or ds.SOPInstanceUID
    ref.PersonName = NESTED_NAMES[0]  # listed in Table E.1-1 (D) inside a sequence the profile walks
    ds.SourceImageSequence = Sequence([ref])
    region = Dataset()
    region.CodeValue = "T-D3000"
    region.CodingSchemeDesignator = "SRT"
    region.CodeMeaning = "Chest"
    region.EvaluatorName = NESTED_NAMES[1]  # a person name NOT in the table, inside a sequence NOT in the table
    ds.AnatomicRegionSequence = Sequence([region])


def planted_tree(tmp_path: Path, names: list[Path]) -> Path:
    """Copy real DICOM files into tmp/in (one subfolder per source folder) and plant identifiers in each."""
    src = tmp_path / "in"
    src.mkdir()
    sops: list[str] = []
    for f in names:
        sops.append(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID))
    folders = sorted({f.parent.name for f in names})
    for i, f in enumerate(names):
        dest = src / f.parent.name / f.name
        dest.parent.mkdir(exist_ok=True)
        ds = pydicom.dcmread(f)
        plant(ds, other_sop=sops[(i + 1) % len(sops)], patient=folders.index(f.parent.name))
        ds.save_as(dest, enforce_file_format=False)
    return src


def out_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def assert_clean(out: Path, extra: list[str] = ()) -> None:  # type: ignore[assignment]
    files = out_files(out)
    assert files
    for p in files:
        data = p.read_bytes().lower()
        for s in [*MUST_VANISH, *extra]:
            assert s.lower().encode() not in data, f"{s!r} left in {p}"


def instance_uids(ds: Dataset) -> dict[str, str]:
    return {
        k: str(ds[k].value)
        for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
        if k in ds
    }


CT_FILES = [DATA / "ct_dicom_gap" / n for n in ("7106", "7136", "7166", "7196")] + [DATA / "highdicom" / "ct_image.dcm"]


# ------------------------------------------------------------------------------------------------- the table


def test_table_keywords_and_actions_match_the_standard() -> None:
    from pydicom.datadict import keyword_for_tag

    assert len(TABLE_E1_1) > 250
    for tag, kw, act, _ in TABLE_E1_1:
        assert keyword_for_tag(tag) == kw, hex(tag)
        assert act in ("D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*")
    assert BY_TAG[0x00100010][1] == "Z" and BY_TAG[0x0020000D][1] == "U" and BY_TAG[0x00081050][1] == "X"
    assert parse_profile(["retain-dates,retain-device"]) == ("basic", "retain-dates", "retain-device")
    with pytest.raises(DeidError, match="choose from"):
        parse_profile(["retain-everything"])


# ---------------------------------------------------------------------------------------- identifiers, UIDs


def test_planted_identifiers_absent_uids_new_and_consistent(tmp_path: Path) -> None:
    src = planted_tree(tmp_path, CT_FILES)
    (src / "readme.txt").write_text("not dicom")
    inputs = {p.relative_to(src): pydicom.dcmread(p) for p in out_files(src) if p.suffix != ".txt"}
    in_uids = {u for ds in inputs.values() for u in instance_uids(ds).values()}
    out = tmp_path / "out"
    rep = deidentify(src, out, mapping=tmp_path / "map.json")
    assert_clean(out, extra=sorted(in_uids))  # no original instance UID anywhere in the output bytes
    assert [s["path"] for s in rep.skipped] == ["readme.txt"] and not (out / "readme.txt").exists()
    assert sorted(p.relative_to(out) for p in out_files(out)) == sorted(inputs)
    outs = {rel: pydicom.dcmread(out / rel) for rel in inputs}
    # one new study / series / frame of reference UID per original, consistent across files
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        pairs = {(str(inputs[r][key].value), str(outs[r][key].value)) for r in inputs}
        assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs), key
        assert not {b for _, b in pairs} & in_uids
    assert len({str(d.SeriesInstanceUID) for d in outs.values()}) == 2 == rep.series
    new_sop = {str(inputs[r].SOPInstanceUID): str(outs[r].SOPInstanceUID) for r in inputs}
    for r, ds in outs.items():
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        ref = ds.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == new_sop[str(inputs[r].SourceImageSequence[0].ReferencedSOPInstanceUID)]
        assert ref.PersonName != NESTED_NAMES[0] and ds.AnatomicRegionSequence[0].EvaluatorName == ""
        assert ds.AnatomicRegionSequence[0].CodeMeaning == "Chest"  # the rest of the sequence is kept
        assert ds.PatientIdentityRemoved == "YES"
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
        assert ds.PatientName == ds.PatientID and str(ds.PatientID).startswith("ANON")
        assert not [e for e in ds if e.tag.is_private]
        assert "PatientBirthDate" not in ds or ds.PatientBirthDate == ""
    # one pseudonym per patient: the four slices of one patient share one, the other patient has another
    gap = {str(outs[r].PatientID) for r in inputs if r.parts[0] == "ct_dicom_gap"}
    assert len(gap) == 1 and gap != {str(outs[Path("highdicom/ct_image.dcm")].PatientID)}


def test_pixels_and_geometry_identical(tmp_path: Path, ct3: Path) -> None:
    out = tmp_path / "ct3_out"
    deidentify(ct3, out)
    for f in sorted(ct3.iterdir()):
        a, b = pydicom.dcmread(f), pydicom.dcmread(out / f.name)
        assert a.PixelData == b.PixelData  # byte-identical
        for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows"):
            assert a[kw].value == b[kw].value, kw
        assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID
    img_in, img_out = medimg.read(ct3), medimg.read(out)
    assert img_in.spacing == img_out.spacing and img_in.origin == img_out.origin
    assert np.array_equal(img_in.direction, img_out.direction) and np.array_equal(img_in.array, img_out.array)


def test_mapping_reused_gives_same_uids_and_stays_private(tmp_path: Path, ct3: Path) -> None:
    m = tmp_path / "keys" / "map.json"
    m.parent.mkdir()
    deidentify(ct3, tmp_path / "o1", mapping=m)
    deidentify(ct3, tmp_path / "o2", mapping=m)
    deidentify(ct3, tmp_path / "o3")  # no mapping: a fresh secret
    one, two, three = (pydicom.dcmread(tmp_path / o / "7136") for o in ("o1", "o2", "o3"))
    assert instance_uids(one) == instance_uids(two) and one.PatientID == two.PatientID
    assert one.StudyInstanceUID != three.StudyInstanceUID and one.PatientID != three.PatientID
    assert stat.S_IMODE(m.stat().st_mode) == 0o600
    mp = Mapping.load(m)
    assert mp.uids[str(pydicom.dcmread(ct3 / "7136").StudyInstanceUID)] == one.StudyInstanceUID
    for o in ("o1", "o2"):  # the mapping is never written into the output
        assert not any(p.name.endswith(".json") for p in out_files(tmp_path / o))
    with pytest.raises(DeidError, match="outside the input and the output"):
        deidentify(ct3, tmp_path / "o4", mapping=tmp_path / "o4" / "map.json")
    (tmp_path / "bogus.json").write_text("{}")
    with pytest.raises(DeidError, match="not a medimg de-identification mapping"):
        deidentify(ct3, tmp_path / "o5", mapping=tmp_path / "bogus.json")
    assert not (tmp_path / "o4").exists() and not (tmp_path / "o5").exists()


def _days(a: str, b: str) -> int:
    from datetime import date

    def d(s: str) -> date:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))

    return (d(b) - d(a)).days


def test_retain_dates_shift_is_consistent_per_patient(tmp_path: Path) -> None:
    src = planted_tree(tmp_path, CT_FILES)
    out = tmp_path / "out"
    rep = deidentify(src, out, profile=["retain-dates"], mapping=tmp_path / "m.json")
    assert_clean(out)
    shifts: dict[str, set[int]] = {}
    for p in out_files(src):
        a, b = pydicom.dcmread(p), pydicom.dcmread(out / p.relative_to(src))
        for kw in ("StudyDate", "AcquisitionDate", "SeriesDate", "ContentDate", "InstanceCreationDate"):
            if a.get(kw):
                shifts.setdefault(str(b.PatientID), set()).add(_days(a[kw].value, b[kw].value))
        assert _days(b.StudyDate, b.AcquisitionDate) == 1  # intervals kept
        assert b.LongitudinalTemporalInformationModified == "MODIFIED" and b.PatientBirthDate == ""
        assert "113107" in [c.CodeValue for c in b.DeidentificationMethodCodeSequence]
    assert len(shifts) == 2 and all(len(s) == 1 and -3650 <= next(iter(s)) <= -366 for s in shifts.values())
    recorded = {r.pseudonym: r.date_shift_days for r in Mapping.load(tmp_path / "m.json").patients.values()}
    assert {k: next(iter(v)) for k, v in shifts.items()} == recorded
    assert rep.date_shift == "per patient, from the secret"
    # a fixed shift, and refusing one that contradicts the mapping
    deidentify(src, tmp_path / "fixed", profile=["retain-dates"], date_shift_days=-100)
    b = pydicom.dcmread(tmp_path / "fixed" / "ct_dicom_gap" / "7136")
    assert _days("20210405", b.StudyDate) == -100
    with pytest.raises(DeidError, match="date shift"):
        deidentify(src, tmp_path / "o3", profile=["retain-dates"], date_shift_days=-5, mapping=tmp_path / "m.json")
    assert not (tmp_path / "o3").exists()
    with pytest.raises(DeidError, match="retain-dates"):
        deidentify(src, tmp_path / "o4", date_shift_days=-5)
    # basic profile: dates removed
    deidentify(src, tmp_path / "basic")
    b = pydicom.dcmread(tmp_path / "basic" / "ct_dicom_gap" / "7136")
    assert b.StudyDate == "" and b.LongitudinalTemporalInformationModified == "REMOVED"


def test_options_keep_what_they_promise(tmp_path: Path) -> None:
    src = planted_tree(tmp_path, CT_FILES[:1])
    ds = pydicom.dcmread(out_files(src)[0])
    ds.StationName, ds.PatientSex, ds.PatientAge = "CTSCAN01", "F", "061Y"
    ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", "1000")
    ds.save_as(out_files(src)[0], enforce_file_format=False)
    out = tmp_path / "out"
    opts = ["retain-device,retain-patient-characteristics", "clean-descriptors", "retain-safe-private"]
    deidentify(src, out, profile=opts)
    assert_clean(out)
    b = pydicom.dcmread(out_files(out)[0])
    assert b.StationName == "CTSCAN01" and b.PatientSex == "F" and b.PatientAge == "061Y"
    assert b.StudyDescription == "CT chest follow-up"  # cleaned of the patient's name, the rest kept
    private = [e for e in b if e.tag.is_private]
    assert [str(e.value) for e in private if e.VR == "IS"] == ["1000"]  # the safe b-value kept, the note removed
    assert {str(e.value) for e in private if e.VR == "LO"} == {"SIEMENS MR HEADER"}
    basic = tmp_path / "basic"
    deidentify(src, basic)
    b = pydicom.dcmread(out_files(basic)[0])
    assert "StationName" not in b or b.StationName != "CTSCAN01"
    assert "StudyDescription" not in b and b.PatientSex == "" and "PatientAge" not in b


# ------------------------------------------------------------------------------- burned-in text, real variety


@needs_shared
def test_variety_of_real_files_and_burned_in_flag(tmp_path: Path) -> None:
    misc = SHARED / "dicom_misc"
    names = [
        misc / "pydicom_data" / n for n in ("US1_UNCR.dcm", "MR2_UNCR.dcm", "eCT_Supplemental.dcm", "emri_small.dcm")
    ] + [misc / "highdicom" / "dx_image.dcm"]
    names = [n for n in names if n.is_file()]
    if len(names) < 3:
        pytest.skip("dicom_misc files missing")
    src = planted_tree(tmp_path, names)
    ins = {p.relative_to(src): pydicom.dcmread(p) for p in out_files(src)}
    in_uids = {u for d in ins.values() for u in instance_uids(d).values()}
    out = tmp_path / "out"
    rep = deidentify(src, out, report=tmp_path / "report.json")
    assert_clean(out, extra=sorted(in_uids))
    for rel, a in ins.items():
        b = pydicom.dcmread(out / rel)
        if "PixelData" in a:
            assert a.PixelData == b.PixelData, rel
        if "PerFrameFunctionalGroupsSequence" in a:  # enhanced multi-frame: per-frame geometry untouched
            for fa, fb in zip(a.PerFrameFunctionalGroupsSequence, b.PerFrameFunctionalGroupsSequence, strict=True):
                pa, pb = fa.get("PlanePositionSequence"), fb.get("PlanePositionSequence")
                assert (pa[0].ImagePositionPatient if pa else None) == (pb[0].ImagePositionPatient if pb else None)
    flagged = {r["path"] for r in rep.review}
    assert any("US1_UNCR" in f for f in flagged) and not any("MR2_UNCR" in f for f in flagged)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["n_review"] == len(flagged) and saved["n_files"] == len(ins)
    assert not any(s.lower() in (tmp_path / "report.json").read_text().lower() for s in ("Smithson", "PID884422"))


def test_burned_in_annotation_flagged_and_overlays_removed(tmp_path: Path, ct3: Path) -> None:
    ds = pydicom.dcmread(ct3 / "7136")
    ds.BurnedInAnnotation = "YES"
    ds.add_new(0x60000010, "US", 4)  # an overlay plane whose comment holds a name
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60003000, "OW", b"\xff\x00")
    ds.add_new(0x60004000, "LT", PRIVATE_TEXT)
    ds.save_as(ct3 / "7136", enforce_file_format=False)
    rep = deidentify(ct3, tmp_path / "out")
    assert [r["path"] for r in rep.review] == ["7136"] and "BurnedInAnnotation is YES" in rep.review[0]["reasons"]
    out = pydicom.dcmread(tmp_path / "out" / "7136")
    assert not [e for e in out if e.tag.group == 0x6000] and out.PixelData == ds.PixelData
    assert_clean(tmp_path / "out", extra=[])


PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def test_transfer_syntaxes_encapsulated_pixels_and_files_without_meta(tmp_path: Path) -> None:
    """Files pydicom ships: RLE and JPEG (encapsulated), implicit VR, big endian, a file without meta/preamble,
    a secondary capture; pixels stay byte-identical, transfer syntax kept, planted identifiers gone."""
    names = ["MR_small_RLE.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "SC_rgb_jpeg_dcmtk.dcm"]
    names = [n for n in names if (PYDICOM_FILES / n).is_file()]
    if len(names) < 3:
        pytest.skip("pydicom's test files are not installed")
    src = planted_tree(tmp_path, [PYDICOM_FILES / n for n in names])
    nometa = PYDICOM_FILES / "ExplVR_LitEndNoMeta.dcm"
    if nometa.is_file():
        shutil.copy(nometa, src / "test_files" / "nometa")
    out = tmp_path / "out"
    rep = deidentify(src, out)
    assert_clean(out)
    assert len(rep.files) == len(names) + nometa.is_file() and not rep.skipped
    for p in out_files(src):
        a, b = pydicom.dcmread(p, force=True), pydicom.dcmread(out / p.relative_to(src), force=True)
        assert a.get("PixelData") == b.get("PixelData")
        assert a.file_meta.get("TransferSyntaxUID") == b.file_meta.get("TransferSyntaxUID")
        assert (a.preamble is None) == (b.preamble is None)
        assert b.PatientIdentityRemoved == "YES" and b.SOPInstanceUID != a.SOPInstanceUID
    assert [r["path"] for r in rep.review] == ["test_files/SC_rgb_jpeg_dcmtk.dcm"]
    truncated = PYDICOM_FILES / "MR_truncated.dcm"
    if truncated.is_file():
        shutil.copy(truncated, src / "test_files" / "MR_truncated.dcm")
        with pytest.raises(DeidError, match="MR_truncated"):
            deidentify(src, tmp_path / "out2")
        assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_are_refused_without_partial_output(tmp_path: Path, ct3: Path) -> None:
    with pytest.raises(DeidError, match="does not exist"):
        deidentify(tmp_path / "missing", tmp_path / "o")
    for bad in (ct3, ct3 / "sub"):
        with pytest.raises(DeidError, match="inside it"):
            deidentify(ct3, bad)
    with pytest.raises(DeidError, match="inside the output"):
        deidentify(ct3, tmp_path)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "old.txt").write_text("x")
    with pytest.raises(DeidError, match="--overwrite"):
        deidentify(ct3, existing)
    deidentify(ct3, existing, overwrite=True)
    assert sorted(p.name for p in existing.iterdir()) == ["7136", "7166", "7196"]
    # a damaged DICOM file in the tree stops the run: no output, no temporary folder left
    tree = tmp_path / "tree"
    shutil.copytree(ct3, tree / "series")
    raw = (tree / "series" / "7166").read_bytes()
    (tree / "series" / "7166").write_bytes(raw[: len(raw) // 2])
    before = set(os.listdir(tmp_path))
    with pytest.raises(DeidError, match="7166"):
        deidentify(tree, tmp_path / "o_bad")
    assert set(os.listdir(tmp_path)) == before
    # a folder without DICOM
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("hello")
    with pytest.raises(DeidError, match="No DICOM file"):
        deidentify(tmp_path / "txt", tmp_path / "o_txt")
    assert not (tmp_path / "o_txt").exists()


# -------------------------------------------------------------------------------- operation and command line


def test_operation_and_cli(tmp_path: Path, ct3: Path) -> None:
    res = run("deid", {"input": str(ct3), "output": str(tmp_path / "op_out")}, Context())
    assert res.n_files == 3 and res.studies == 1 and res.provenance is not None  # type: ignore[attr-defined]
    with pytest.raises(MedimgError):
        run("deid", {"input": str(ct3), "output": str(ct3)}, Context())
    r = CliRunner().invoke(
        app, ["deid", str(ct3), str(tmp_path / "cli_out"), "--profile", "retain-dates", "--json", "--report",
              str(tmp_path / "r.json")]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n_files"] == 3 and d["profile"] == ["basic", "retain-dates"] and (tmp_path / "r.json").is_file()
    r = CliRunner().invoke(app, ["deid", str(ct3), str(ct3 / "x")])
    assert r.exit_code == 2 and "outside" in r.output
    single = tmp_path / "one.dcm"
    r = CliRunner().invoke(app, ["deid", str(ct3 / "7136"), str(single)])
    assert r.exit_code == 0, r.output
    assert pydicom.dcmread(single).PixelData == pydicom.dcmread(ct3 / "7136").PixelData
