"""`imlf inspect`: metadata, JPEG structure, thumbnail and flags, on files the tests make themselves."""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imlforensics.metadata import inspect_file

piexif = pytest.importorskip("piexif", reason="piexif (test extra) builds the EXIF blocks")

# a camera-like luminance table (not libjpeg's K.1 scaling): flat-ish, as many cameras use
CAMERA_LUMA = [max(1, 2 + (i // 8 + i % 8) // 3) for i in range(64)]
CAMERA_CHROMA = [max(1, 3 + (i // 8 + i % 8) // 2) for i in range(64)]


def scene(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """A smooth picture with a few shapes: enough structure for the thumbnail check."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 200 + 30, y / h * 180 + 40, (x + y) / (w + h) * 120 + 60], -1)
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(30, 90)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def thumb_bytes(rgb: np.ndarray, size=(160, 120)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).resize(size, Image.Resampling.BOX).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def exif_bytes(thumb: bytes | None, software: str | None = None, make: str = "Canon", changed: str | None = None,
               size=(640, 480)) -> bytes:
    when = b"2024:05:01 10:20:30"
    zeroth = {piexif.ImageIFD.Make: make.encode(), piexif.ImageIFD.Model: b"Canon EOS 80D",
              piexif.ImageIFD.Orientation: 1, piexif.ImageIFD.DateTime: (changed or "2024:05:01 10:20:30").encode()}
    if software:
        zeroth[piexif.ImageIFD.Software] = software.encode()
    exif = {piexif.ExifIFD.DateTimeOriginal: when, piexif.ExifIFD.DateTimeDigitized: when,
            piexif.ExifIFD.PixelXDimension: size[0], piexif.ExifIFD.PixelYDimension: size[1]}
    gps = {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (0, 1)),
           piexif.GPSIFD.GPSLongitudeRef: b"E", piexif.GPSIFD.GPSLongitude: ((2, 1), (21, 1), (0, 1))}
    d = {"0th": zeroth, "Exif": exif, "GPS": gps, "1st": {}, "thumbnail": None}
    if thumb is not None:
        d["1st"] = {piexif.ImageIFD.JPEGInterchangeFormat: 0, piexif.ImageIFD.JPEGInterchangeFormatLength: 0}
        d["thumbnail"] = thumb
    return piexif.dump(d)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inspect")
    rgb = scene()
    out = {}
    # 1. camera-like: own tables, EXIF with capture dates, GPS and a thumbnail of the picture
    out["camera"] = d / "camera.jpg"
    Image.fromarray(rgb).save(out["camera"], "JPEG", qtables=[CAMERA_LUMA, CAMERA_CHROMA], subsampling="4:2:2",
                              exif=exif_bytes(thumb_bytes(rgb)))
    # 2. the same picture re-saved by an editor: libjpeg tables at quality 90, Software, a later DateTime
    cam = Image.open(out["camera"])
    out["edited"] = d / "edited.jpg"
    cam.save(out["edited"], "JPEG", quality=90, exif=exif_bytes(thumb_bytes(rgb), software="Adobe Photoshop 25.0 (Windows)",
                                                                 changed="2024:06:11 09:00:00"))
    # 3. content changed, thumbnail left as the camera wrote it
    forged = np.asarray(cam.convert("RGB")).copy()
    forged[150:330, 200:440] = forged[300:480, 400:640]  # copy-move from the lower right
    out["mismatch"] = d / "mismatch.jpg"
    Image.fromarray(forged).save(out["mismatch"], "JPEG", qtables=[CAMERA_LUMA, CAMERA_CHROMA],
                                 exif=exif_bytes(thumb_bytes(rgb)))
    # 4. a PNG with no metadata
    out["png"] = d / "plain.png"
    Image.fromarray(rgb).save(out["png"])
    # 5. progressive JPEG with restart markers and a comment
    out["progressive"] = d / "progressive.jpg"
    Image.fromarray(rgb).save(out["progressive"], "JPEG", quality=75, progressive=True, comment="made by a test")
    return out


def flags(info: dict) -> list[str]:
    return [f["flag"] for f in info["flags"]]


def test_camera_jpeg(files):
    info = inspect_file(files["camera"])
    ex = info["exif"]
    assert (ex["make"], ex["model"], ex["gps"], ex["orientation_text"]) == ("Canon", "Canon EOS 80D", True, "normal")
    assert info["dates"]["consistent"] is True
    j = info["jpeg"]
    assert j["standard"] is False and j["subsampling"] == "4:2:2" and j["coding"] == "baseline"
    assert j["quantization_tables"]["0"][0][:3] == CAMERA_LUMA[:3]  # natural order, row 0
    assert "APP1 Exif" in j["app_segments"]
    t = info["thumbnail"]
    assert t["present"] and (t["width"], t["height"]) == (160, 120) and t["matches"] is True
    assert not [f for f in info["flags"] if f["level"] == "warning"], info["flags"]


def test_editor_resave(files):
    info = inspect_file(files["edited"])
    j = info["jpeg"]
    assert j["standard"] is True and j["quality"] == 90
    assert info["exif"]["software"] == "Adobe Photoshop 25.0 (Windows)"
    assert info["dates"]["consistent"] is False
    f = flags(info)
    assert "software field names an editor" in f and "dates disagree" in f
    assert any("libjpeg" in x for x in f)
    assert info["thumbnail"]["matches"] is True  # same picture: the thumbnail still fits
    ev = next(x["evidence"] for x in info["flags"] if x["flag"] == "software field names an editor")
    assert "Photoshop" in ev


def test_thumbnail_mismatch(files):
    info = inspect_file(files["mismatch"])
    t = info["thumbnail"]
    assert t["present"] and t["matches"] is False and t["worst_cell_difference"] > 30
    assert "thumbnail differs from the image" in flags(info)
    assert "software field names an editor" not in flags(info)


def test_png_without_metadata(files):
    info = inspect_file(files["png"])
    assert info["format"] == "PNG" and info["jpeg"] is None
    assert not info["exif"]["present"] and not info["xmp"]["present"] and not info["thumbnail"]["present"]
    assert [f["level"] for f in info["flags"]] == ["info"] and "no EXIF" in info["flags"][0]["flag"]


def test_progressive_structure(files):
    j = inspect_file(files["progressive"])["jpeg"]
    assert j["progressive"] and j["coding"] == "progressive" and j["scans"] > 1
    assert j["comments"] == ["made by a test"] and j["standard"] is True and j["quality"] == 75


def test_restart_markers(tmp_path):
    from imlforensics.metadata.jpeg import read_segments

    cv2 = pytest.importorskip("cv2")
    ok, buf = cv2.imencode(".jpg", scene()[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80, cv2.IMWRITE_JPEG_RST_INTERVAL, 4])
    assert ok
    seg = read_segments(buf.tobytes())
    # 640x480 at 4:2:0: 40 x 30 MCUs, one RST marker after every 4 but the last
    assert seg["restart_interval"] == 4 and seg["restart_markers"] == 40 * 30 // 4 - 1


def test_xmp_history(tmp_path):
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
           'xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#" xmlns:stRef="http://ns.adobe.com/xap/1.0/sType/ResourceRef#" '
           'xmp:CreatorTool="GIMP 2.10"><xmpMM:History><rdf:Seq>'
           '<rdf:li stEvt:action="created" stEvt:softwareAgent="Canon"/>'
           '<rdf:li stEvt:action="saved" stEvt:softwareAgent="GIMP 2.10" stEvt:changed="/"/>'
           '</rdf:Seq></xmpMM:History><xmpMM:DerivedFrom stRef:documentID="xmp.did:1234"/>'
           '</rdf:Description></rdf:RDF></x:xmpmeta>')
    p = tmp_path / "xmp.jpg"
    Image.fromarray(scene()).save(p, "JPEG", xmp=xmp.encode())
    info = inspect_file(p)
    assert info["xmp"]["creator_tool"] == "GIMP 2.10"
    assert [h["action"] for h in info["xmp"]["history"]] == ["created", "saved"]
    f = flags(info)
    assert "XMP history records edits" in f and "software field names an editor" in f
    assert any("derived" in x for x in f)


def test_not_an_image(tmp_path):
    from imlforensics.errors import ImlfError

    p = tmp_path / "x.jpg"
    p.write_text("hello")
    with pytest.raises(ImlfError, match="not an image"):
        inspect_file(p)
    with pytest.raises(ImlfError, match="no such file"):
        inspect_file(tmp_path / "missing.jpg")


def _test_signer():
    """A throw-away ES256 CA and signing certificate, made here: signing needs no network."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imlf test")])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=not sign, crl_sign=not sign, encipher_only=False,
                             decipher_only=False)

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject, issuer, pub, signing_key, ca: bool):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(usage(not ca), critical=True))
        if not ca:
            b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                 .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))
        return b.sign(signing_key, hashes.SHA256())

    ca = cert(name("imlf test CA"), name("imlf test CA"), ca_key.public_key(), ca_key, True)
    leaf = cert(name("imlf test signer"), ca.subject, key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return chain, private


def test_c2pa_signed_and_tampered(tmp_path, files):
    c2pa = pytest.importorskip("c2pa", reason="c2pa-python (the c2pa extra) is not installed")
    pytest.importorskip("cryptography", reason="cryptography makes the test certificates")
    chain, private = _test_signer()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, private, None))
    manifest = {"claim_generator_info": [{"name": "imlf-test", "version": "1"}], "title": "signed.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"},
                    {"action": "c2pa.color_adjustments", "softwareAgent": {"name": "TestEditor 1.0"}}]}}]}
    signed = tmp_path / "signed.jpg"
    with open(files["progressive"], "rb") as src, open(signed, "w+b") as dst:
        c2pa.Builder(json.dumps(manifest)).sign(signer, "image/jpeg", src, dst)
    info = inspect_file(signed)["c2pa"]
    assert info["present"] and info["valid"], info
    assert info["claim_generator"].startswith("imlf-test 1")
    assert [a["action"] for a in info["actions"]] == ["c2pa.created", "c2pa.color_adjustments"]
    assert info["actions"][1]["software_agent"] == "TestEditor 1.0"
    assert "Content Credentials record edits" in flags(inspect_file(signed))
    # change one byte of the picture data after signing: the content hash no longer matches
    data = bytearray(signed.read_bytes())
    eoi = data.rindex(b"\xff\xd9")
    data[eoi - 100] ^= 0x01
    tampered = tmp_path / "tampered.jpg"
    tampered.write_bytes(bytes(data))
    bad = inspect_file(tampered)
    assert bad["c2pa"]["present"] and bad["c2pa"]["valid"] is False
    assert any("dataHash.mismatch" in str(c) for c in bad["c2pa"]["validation_failures"]), bad["c2pa"]
    assert any(f["flag"].startswith("Content Credentials do not validate") for f in bad["flags"])
    # without a manifest
    assert inspect_file(files["camera"])["c2pa"]["present"] is False


def test_c2pa_not_installed(files, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "c2pa", None)  # import c2pa now raises ImportError
    info = inspect_file(files["camera"])["c2pa"]
    assert info["available"] is False and "not installed" in info["note"]


def test_truncated_and_trailing(files, tmp_path):
    data = files["camera"].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])
    info = inspect_file(cut)
    assert info["jpeg"]["truncated"] and "the JPEG data is cut short or corrupt" in flags(info)
    assert info["exif"]["make"] == "Canon"  # the headers are still read
    extra = tmp_path / "extra.jpg"
    extra.write_bytes(data + b"PK\x03\x04 hidden archive")
    info = inspect_file(extra)
    assert info["jpeg"]["trailing_bytes"] == 19 and not info["jpeg"]["truncated"]
    assert "data after the end of the JPEG" in flags(info)
