"""De-identification of one DICOM dataset: PS3.15 Annex E Basic Application Level Confidentiality Profile.

:class:`Deidentifier` applies :data:`medimg.deid.table.TABLE_E1_1` (and the options chosen) to a pydicom
``Dataset`` in place, at every nesting level (sequences are walked recursively), and returns a
:class:`FileChanges` record of what it did (attribute names only, never the values). Attributes not in the
table are kept, with three safety nets: person names (VR PN) are emptied, instance UIDs (VR UI, not a
well-known ``1.2.840.10008.`` UID) are remapped, and dates (VR DA/DT) are replaced (or shifted with the
retain-dates option). Public attributes unknown to the data dictionary are removed; private attributes are
removed unless the Retain Safe Private option keeps one of :data:`~medimg.deid.table.SAFE_PRIVATE`.

Identity is replaced consistently through a :class:`Mapping`: a secret (random, kept in the mapping file), UIDs
(new ``2.25.`` UIDs derived from the secret and the original UID with HMAC-SHA256, so one original always maps to
the same new UID under one mapping), and per patient a pseudonym (``ANON`` + 10 hex digits, used as PatientName
and PatientID) and a date shift in whole days (Retain Longitudinal Temporal Information with Modified Dates: all
dates of one patient move by the same number of days, so intervals are kept).

Pixel data and geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness, ...) are
not in the table and are never touched.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_has_tag, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from medimg.deid.table import BY_TAG, GROUP_RULES, METHOD_CODES, OPTION_LETTERS, SAFE_PRIVATE, Action
from medimg.errors import MedimgError

#: Every profile option understood (``basic`` is always applied).
PROFILE_OPTIONS: tuple[str, ...] = tuple(METHOD_CODES)
#: Dates are shifted back by a number of days in this range (derived from the secret) unless a fixed shift is given.
DERIVED_SHIFT_RANGE_DAYS: tuple[int, int] = (-3650, -366)
#: Modalities and SOP classes where text is often burned into the pixels.
BURN_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "DOC", "IVUS"})
SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    }
)
#: ImageType values of screen captures (DERIVED/SECONDARY alone is common for reformats and is not flagged).
BURN_IN_IMAGE_TYPES = frozenset({"SCREEN SAVE", "SCREENSHOT", "CAPTURE", "SECONDARY CAPTURE"})
WELL_KNOWN_UID_ROOT = "1.2.840.10008."
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY: dict[str, Any] = {
    "AE": _DUMMY_TEXT,
    "AS": "000Y",
    "CS": _DUMMY_TEXT,
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "FL": 0.0,
    "FD": 0.0,
    "IS": "0",
    "LO": _DUMMY_TEXT,
    "LT": _DUMMY_TEXT,
    "PN": _DUMMY_TEXT,
    "SH": _DUMMY_TEXT,
    "ST": _DUMMY_TEXT,
    "TM": "000000",
    "UC": _DUMMY_TEXT,
    "UR": "",
    "UT": _DUMMY_TEXT,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
}
_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020


class DeidError(MedimgError):
    """De-identification cannot proceed (bad input, output or mapping); the message says what to do."""


# --------------------------------------------------------------------------------------------------- mapping


@dataclass
class PatientRecord:
    """One patient of a mapping: the original identifiers (kept only in the mapping file), the pseudonym and
    the date shift in days (None until a date was shifted)."""

    pseudonym: str
    original_id: str
    original_name: str
    date_shift_days: int | None = None


@dataclass
class Mapping:
    """The re-identification key of a de-identification: secret, UID map and patients. It holds identifiers,
    so it is written only where the user asks (``--mapping``), never into the output, with mode 0600."""

    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    uids: dict[str, str] = field(default_factory=dict)
    patients: dict[str, PatientRecord] = field(default_factory=dict)

    FORMAT = "medimg-deid-mapping"

    @classmethod
    def load(cls, path: Path) -> Mapping:
        """Read a mapping file written by :meth:`save` (clear errors for anything else)."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DeidError(
                f"The mapping file {str(path)!r} cannot be read as a medimg mapping ({e}); give the file a previous "
                "run wrote, or a new path to start a new mapping."
            ) from None
        if not isinstance(raw, dict) or raw.get("format") != cls.FORMAT or not isinstance(raw.get("secret"), str):
            raise DeidError(
                f"{str(path)!r} is not a medimg de-identification mapping; give the file a previous run wrote, or a "
                "new path to start a new mapping."
            )
        pats = {k: PatientRecord(**v) for k, v in raw.get("patients", {}).items()}
        return cls(secret=raw["secret"], uids=dict(raw.get("uids", {})), patients=pats)

    def to_json(self) -> str:
        """The mapping as JSON text."""
        return json.dumps(
            {
                "format": self.FORMAT,
                "version": 1,
                "note": "Re-identification key: it contains the original identifiers. Keep it private.",
                "secret": self.secret,
                "patients": {k: vars(v) for k, v in sorted(self.patients.items())},
                "uids": dict(sorted(self.uids.items())),
            },
            indent=1,
        )

    def _digest(self, what: str) -> bytes:
        return hmac.new(bytes.fromhex(self.secret), what.encode("utf-8"), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The new UID of ``original`` (``2.25.<128-bit integer>``, derived from the secret; recorded)."""
        new = self.uids.get(original)
        if new is None:
            new = "2.25." + str(int.from_bytes(self._digest("uid:" + original)[:16], "big"))
            self.uids[original] = new
        return new

    def patient(self, key: str, original_id: str, original_name: str) -> PatientRecord:
        """The record of the patient identified by ``key`` (created with a pseudonym on first sight)."""
        rec = self.patients.get(key)
        if rec is None:
            rec = PatientRecord("ANON" + self._digest("patient:" + key).hex()[:10].upper(), original_id, original_name)
            self.patients[key] = rec
        return rec

    def derived_shift(self, key: str) -> int:
        """A date shift in days for patient ``key`` in :data:`DERIVED_SHIFT_RANGE_DAYS`, derived from the secret."""
        lo, hi = DERIVED_SHIFT_RANGE_DAYS
        return lo + int.from_bytes(self._digest("shift:" + key)[:8], "big") % (hi - lo + 1)


# ------------------------------------------------------------------------------------------------ per file


@dataclass
class FileChanges:
    """What de-identification did to one file: attribute names (nested ones as ``Seq[i].Attr``), never values."""

    removed: list[str] = field(default_factory=list)
    emptied: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    uids_remapped: list[str] = field(default_factory=list)
    dates_shifted: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    private_removed: int = 0
    private_kept: list[str] = field(default_factory=list)
    burned_in_review: list[str] = field(default_factory=list)


def parse_profile(items: Iterable[str]) -> tuple[str, ...]:
    """Normalise profile names (comma-separated or repeated; ``basic`` always first). Unknown names are an error
    listing the known ones."""
    names: list[str] = ["basic"]
    for item in items:
        for name in (s.strip().lower() for s in str(item).split(",")):
            if not name:
                continue
            if name not in METHOD_CODES:
                raise DeidError(
                    f"Unknown de-identification profile {name!r}; choose from: {', '.join(PROFILE_OPTIONS)}."
                )
            if name not in names:
                names.append(name)
    if "retain-dates" in names and "retain-full-dates" in names:
        raise DeidError("Give retain-dates (shifted dates) or retain-full-dates (original dates), not both.")
    return tuple(names)


def _name(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})"


def _is_private_creator(tag: BaseTag) -> bool:
    return tag.is_private and 0x0010 <= tag.element <= 0x00FF


def burned_in_reasons(ds: Dataset) -> list[str]:
    """Why this instance may carry text burned into its pixels (empty when nothing suggests it)."""
    reasons = []
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        reasons.append("BurnedInAnnotation is YES")
    modality = str(ds.get("Modality", "")).upper()
    if modality in BURN_IN_MODALITIES:
        reasons.append(f"modality {modality} often has burned-in text")
    if str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE_CLASSES:
        reasons.append("secondary capture / encapsulated document")
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])] if "ImageType" in ds else []
    if any(v in BURN_IN_IMAGE_TYPES for v in image_type):
        reasons.append("ImageType " + "\\".join(image_type) + " (screen capture)")
    return reasons


class Deidentifier:
    """Applies the Basic Application Level Confidentiality Profile with ``options`` to datasets.

    Parameters
    ----------
    options:
        Profile names from :func:`parse_profile` (``basic`` plus options).
    mapping:
        The :class:`Mapping` giving new UIDs, pseudonyms and date shifts (shared by every file of a run).
    date_shift_days:
        With ``retain-dates``: shift every patient's dates by this many days (otherwise a per-patient shift is
        derived from the mapping's secret). A patient already recorded with another shift is an error.
    """

    def __init__(self, options: Iterable[str], mapping: Mapping, date_shift_days: int | None = None) -> None:
        self.options = parse_profile(options)
        self.mapping = mapping
        self.fixed_shift = date_shift_days
        if date_shift_days is not None and "retain-dates" not in self.options:
            raise DeidError(
                "--date-shift-days shifts dates only with the retain-dates profile; add --profile retain-dates."
            )
        self.letters = {OPTION_LETTERS[o] for o in self.options if o in OPTION_LETTERS}
        self.safe_private = {(c.strip().upper(), g, e) for c, g, e, _ in SAFE_PRIVATE}

    # ------------------------------------------------------------------ actions

    def action_for(self, tag: BaseTag, vr: str) -> tuple[str, str] | None:
        """The action for a public attribute (``X``, ``Z``, ``D``, ``K``, ``C``, ``U`` or ``SHIFT``) and why, or None
        to keep it untouched (not in the table, no safety net applies)."""
        rule = BY_TAG.get(int(tag))
        act: Action | None = None
        opts = ""
        if rule is not None:
            _, act, opts = rule
        else:
            for mask, value, elem, _, gact, gopts in GROUP_RULES:
                if tag.group & mask == value and (elem is None or tag.element == elem):
                    act, opts = gact, gopts
                    break
        if act is None:
            if vr == "PN":
                return "Z", "person name not in the table"
            if vr in ("DA", "DT"):
                return ("SHIFT" if "retain-dates" in self.options else "D"), "date not in the table"
            if vr == "UI":
                return "U?", "UID not in the table"
            return None
        for letter in opts:
            if letter in self.letters:
                if letter == "t":
                    if "retain-full-dates" in self.options or vr not in ("DA", "DT"):
                        return "K", "retained (longitudinal temporal option)"
                    return "SHIFT", "date shifted (modified dates option)"
                if letter == "c":
                    return "C", "cleaned (clean descriptors option)"
                return "K", "retained (option)"
        resolved = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}.get(act, act)
        return resolved, "table E.1-1"

    # ------------------------------------------------------------------ dataset

    def apply(self, ds: Dataset) -> FileChanges:
        """De-identify ``ds`` (and its file meta) in place; returns what changed."""
        ch = FileChanges(burned_in_review=burned_in_reasons(ds))
        pid = str(ds.get("PatientID", "") or "")
        pname = str(ds.get("PatientName", "") or "")
        issuer = str(ds.get("IssuerOfPatientID", "") or "")
        if pid:
            key = f"id:{issuer}|{pid}"
        elif pname:
            key = f"name:{pname}"
        else:
            key = "study:" + str(ds.get("StudyInstanceUID", "") or ds.get("SOPInstanceUID", ""))
        self._patient = self.mapping.patient(key, pid, pname)
        self._shift = self._shift_for(key) if "retain-dates" in self.options else 0
        self._tokens = self._identifying_tokens(ds) if "clean-descriptors" in self.options else []
        self._walk(ds, "", ch)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for tag in (0x00020016, 0x00020100, 0x00020102):  # source AE title, private information
                if tag in meta:
                    del meta[tag]
                    ch.removed.append(_name(Tag(tag)))
            if "MediaStorageSOPInstanceUID" in meta:
                meta.MediaStorageSOPInstanceUID = self._uid(str(meta.MediaStorageSOPInstanceUID))
                ch.uids_remapped.append("MediaStorageSOPInstanceUID")
        self._mark(ds)
        return ch

    def _shift_for(self, key: str) -> int:
        rec = self._patient
        if self.fixed_shift is not None:
            if rec.date_shift_days is not None and rec.date_shift_days != self.fixed_shift:
                raise DeidError(
                    f"Patient {rec.pseudonym} was de-identified with a date shift of {rec.date_shift_days} days in "
                    f"this mapping; run without --date-shift-days to keep it consistent, or use a new --mapping."
                )
            rec.date_shift_days = self.fixed_shift
        elif rec.date_shift_days is None:
            rec.date_shift_days = self.mapping.derived_shift(key)
        return rec.date_shift_days

    def _uid(self, value: str) -> str:
        return self.mapping.uid(value)

    def _identifying_tokens(self, ds: Dataset) -> list[str]:
        """Words of the identifying attributes of ``ds`` (names, IDs, dates, institutions ...), longest first:
        what the clean-descriptors option removes from the descriptions it keeps."""
        toks: set[str] = set()
        for elem in ds.iterall():
            if elem.VR in ("SQ", "UI", "OB", "OW", "OF", "OD", "OL", "OV", "UN"):
                continue
            rule = BY_TAG.get(int(elem.tag))
            identifying = rule is not None and rule[1] not in ("K", "U") and "c" not in rule[2]
            if not (identifying or elem.VR == "PN"):
                continue
            vals = elem.value if elem.VM > 1 else [elem.value]
            for v in vals:
                s = str(v or "").strip()
                if len(s) >= 3:
                    toks.add(s)
                toks.update(t for t in re.split(r"[\^\s,.=]+", s) if len(t) >= 3)
        return sorted(toks, key=len, reverse=True)

    def _clean_text(self, text: str) -> str:
        for tok in self._tokens:
            text = re.sub(re.escape(tok), "", text, flags=re.IGNORECASE)
        text = re.sub(r"\+?\d[\d\-() ]{6,}\d", "", text)  # phone-number-like digit runs
        return re.sub(r"\s{2,}", " ", text).strip()

    def _walk(self, ds: Dataset, prefix: str, ch: FileChanges) -> None:
        kept_private_blocks: set[tuple[int, int]] = set()
        creators: dict[tuple[int, int], str] = {}
        for elem in list(ds):
            tag = elem.tag
            if tag.is_private:
                if _is_private_creator(tag):
                    creators[(tag.group, tag.element)] = str(elem.value or "")
            elif tag.element == 0 and tag.group != 0x0002:
                del ds[tag]  # group lengths would be wrong after changes
        for elem in list(ds):
            tag = elem.tag
            name = prefix + _name(tag)
            if tag.is_private:
                if _is_private_creator(tag):
                    continue
                block = (tag.group, tag.element >> 8)
                creator = creators.get(block, "")
                if (
                    "retain-safe-private" in self.options
                    and (creator.strip().upper(), tag.group, tag.element & 0xFF) in self.safe_private
                ):
                    kept_private_blocks.add(block)
                    ch.private_kept.append(f"{creator}:{name}")
                else:
                    del ds[tag]
                    ch.private_removed += 1
                continue
            if tag.group == 0x0002:
                continue
            if not dictionary_has_tag(tag) and not any(tag.group & m == v for m, v, *_ in GROUP_RULES):
                del ds[tag]
                ch.removed.append(name + " (not in the data dictionary)")
                continue
            todo = self.action_for(tag, elem.VR)
            if todo is None:
                if elem.VR == "SQ":
                    self._items(elem, name, ch)
                continue
            self._do(ds, elem, todo[0], name, ch)
        for (group, element), _creator in creators.items():
            if (group, element) not in kept_private_blocks:
                ctag = Tag(group, element)
                if ctag in ds:
                    del ds[ctag]
                    ch.private_removed += 1

    def _items(self, elem: DataElement, name: str, ch: FileChanges) -> None:
        for i, item in enumerate(elem.value or []):
            self._walk(item, f"{name}[{i}].", ch)

    def _do(self, ds: Dataset, elem: DataElement, act: str, name: str, ch: FileChanges) -> None:
        tag, vr = elem.tag, elem.VR
        if act == "X":
            del ds[tag]
            ch.removed.append(name)
        elif act == "K":
            if vr == "SQ":
                self._items(elem, name, ch)
        elif int(tag) in (_PATIENT_NAME, _PATIENT_ID) and act in ("Z", "D"):
            elem.value = self._patient.pseudonym
            ch.replaced.append(name)
        elif act == "Z":
            elem.value = Sequence([]) if vr == "SQ" else (b"" if vr in ("OB", "OW", "UN") else None)
            ch.emptied.append(name)
        elif act in ("U", "U?"):
            if vr == "SQ":
                self._items(elem, name, ch)
            elif vr == "UI":
                vals = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value]) if v]
                if act == "U?" and all(v.startswith(WELL_KNOWN_UID_ROOT) for v in vals):
                    return
                new = [self._uid(v) for v in vals]
                elem.value = new if len(new) > 1 else (new[0] if new else None)
                ch.uids_remapped.append(name)
            else:
                self._do(ds, elem, "D", name, ch)
        elif act == "SHIFT":
            self._shift_elem(elem, name, ch)
        elif act == "C":
            if vr == "SQ":
                self._items(elem, name, ch)
            elif vr in ("LO", "SH", "LT", "ST", "UT", "UC", "CS"):
                vals = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])]
                new = [self._clean_text(v) for v in vals]
                if new != vals:
                    elem.value = new if len(new) > 1 else new[0]
                    ch.cleaned.append(name)
            else:
                self._do(ds, elem, "D", name, ch)
        else:  # D
            if vr == "SQ":
                self._items(elem, name, ch)
            elif vr == "UI":
                self._do(ds, elem, "U", name, ch)
            elif vr in ("DA", "DT") and "retain-dates" in self.options:
                self._shift_elem(elem, name, ch)
            else:
                elem.value = _DUMMY.get(vr, b"\x00\x00")
                ch.replaced.append(name)

    def _shift_elem(self, elem: DataElement, name: str, ch: FileChanges) -> None:
        vals = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value]) if v not in (None, "")]
        if not vals:
            return
        try:
            new = [self._shift_value(v, elem.VR) for v in vals]
        except ValueError:
            elem.value = None
            ch.emptied.append(name + " (date not parseable, emptied)")
            return
        elem.value = new if len(new) > 1 else new[0]
        ch.dates_shifted.append(name)

    def _shift_value(self, value: str, vr: str) -> str:
        parts = value.split("-") if vr == "DA" else [value]
        out = []
        for p in parts:
            p = p.strip()
            if len(p) < 8 or not p[:8].isdigit():
                raise ValueError(p)
            day = _dt.datetime.strptime(p[:8], "%Y%m%d").date() + _dt.timedelta(days=self._shift)
            out.append(day.strftime("%Y%m%d") + p[8:])
        return "-".join(out)

    def _mark(self, ds: Dataset) -> None:
        """PatientIdentityRemoved, DeidentificationMethod (+ code sequence), LongitudinalTemporalInformationModified."""
        import medimg

        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = [f"medimg {medimg.__version__} PS3.15 E.1 basic"] + [
            o for o in self.options if o != "basic"
        ]
        items = []
        for o in self.options:
            code, meaning = METHOD_CODES[o]
            item = Dataset()
            item.CodeValue = code
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if "retain-dates" in self.options:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        elif "retain-full-dates" in self.options:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (temporary file in the same folder, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise DeidError(f"Cannot write {str(path)!r}: {e.strerror or e}; choose a writable path.") from e
    finally:
        if tmp.exists():
            tmp.unlink()
