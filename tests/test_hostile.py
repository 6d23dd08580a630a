"""Hostile and faulty inputs: each test reproduces one way the toolkit broke (issue 14) and checks
the guarantee behind the fix: one clear line of error and a non-zero exit, no traceback, no hang,
nothing written or deleted outside the folders named, no image lost or silently mis-scored."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imlforensics import ImageError, ImlfError, load_detector, load_image

ROOT = Path(__file__).resolve().parents[1]


def imlf(*args, timeout: float = 300, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imlforensics", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert lines, r.stderr
    return lines[0]


@pytest.fixture
def photo(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    rgb = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    p = tmp_path / "in" / "photo.jpg"
    p.parent.mkdir()
    Image.fromarray(rgb).save(p, quality=90)
    return p


# ---------------------------------------------------------------- security and data loss


def test_a_card_cannot_send_weights_remove_outside_the_cache(tmp_path):
    cards, cache, victim = tmp_path / "cards", tmp_path / "cache", tmp_path / "victim"
    cards.mkdir()
    (victim / "data").mkdir(parents=True)
    (cards / "evil.toml").write_text('name = "../../victim"\nsummary = "x"\npaper = "x"\n'
                                     'architecture = "torch.nn:Identity"\nlicense = "MIT"\nredistribution = true\n'
                                     'training = "x"\n')
    env = {"IMLF_CARDS": str(cards), "IMLF_CACHE": str(cache)}
    r = imlf("weights", "remove", "../../victim", env=env)
    assert r.returncode != 0 and "not a plain model name" in one_line_error(r)
    assert (victim / "data").is_dir()
    # the bad card breaks no other command
    assert imlf("models", "--json", env=env).returncode == 0


def test_weights_dir_refuses_names_that_leave_the_cache(tmp_path, monkeypatch):
    from imlforensics.weights.cache import WeightsError, weights_dir

    monkeypatch.setenv("IMLF_CACHE", str(tmp_path))
    for name in ("../x", "a/b", "..", "/etc", ""):
        with pytest.raises(WeightsError):
            weights_dir(name)
    assert weights_dir("mesorch") == tmp_path / "weights" / "mesorch"


def test_make_mask_stems_never_collide_within_a_run():
    from imlforensics.makemask.dataset import Pair, unique_stems

    pairs = [Pair(Path("o/a.jpg"), Path(t)) for t in ("tamp/a.jpg", "c/a.jpg", "c/a-2.jpg", "d/A.jpg")]
    stems = unique_stems(pairs)
    assert len({s.lower() for s in stems.values()}) == 4
    assert stems[pairs[0]] == "a" and stems[pairs[2]] == "a-2"


def test_a_second_run_into_a_locked_folder_is_refused_and_shards_add_up(tmp_path, photo):
    from imlforensics.runs.batch import OutputLock

    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        r = imlf("ensemble", photo.parent, "-o", out, "-m", "ela")
        assert r.returncode != 0 and "another imlf ensemble run is writing" in one_line_error(r)
    for k in (2, 3):
        Image.open(photo).save(photo.parent / f"photo{k}.jpg", quality=90)
    for k in (1, 2):
        r = imlf("ensemble", photo.parent, "-o", out, "-m", "ela", "--shard", f"{k}/2")
        assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted(Path(r["image"]).name for r in rows) == ["photo.jpg", "photo2.jpg", "photo3.jpg"]


def test_resume_from_another_working_folder(tmp_path, photo):
    out = tmp_path / "out"
    r = imlf("ensemble", "in", "-o", out, "-m", "ela", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    other = tmp_path / "elsewhere"
    other.mkdir()
    r = imlf("ensemble", "../in", "-o", out, "-m", "ela", "--resume", cwd=other)
    assert r.returncode == 0 and "1 of 1 image(s) already done" in r.stderr
    assert len((out / "ledger.jsonl").read_text().splitlines()) == 1


def test_a_full_disk_leaves_no_partial_outputs(tmp_path, photo):
    out = tmp_path / "out"
    out.mkdir()

    def small_files():  # as a full disk: every write past 3 kB fails
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    r = subprocess.run([sys.executable, "-m", "imlforensics", "detect", str(photo), "-o", str(out), "-m", "ela"],
                       capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert r.returncode == 1 and "cannot write" in one_line_error(r)
    assert not [p for p in out.iterdir() if not p.name.startswith(".imlf")], list(out.iterdir())
    assert imlf("detect", photo, "-o", out, "-m", "ela").returncode == 0  # a plain rerun is not blocked


# ---------------------------------------------------------------- silently wrong results


def _dataset(tmp_path: Path, mask: np.ndarray, name: str = "d") -> Path:
    root = tmp_path / name
    (root / "Tp").mkdir(parents=True)
    (root / "Gt").mkdir()
    rgb = np.full((64, 64, 3), 40, np.uint8)
    rgb[16:48, 16:48] = 220
    Image.fromarray(rgb).save(root / "Tp" / "a.png")
    Image.fromarray(mask).save(root / "Gt" / "a.png")
    return root


def test_eval_reads_0_1_masks_and_warns_about_empty_and_resized_ones(tmp_path, toy_detector):
    from imlforensics.evaluation.datasets import load_dataset
    from imlforensics.evaluation.evaluate import DetectorSource, score_sample

    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 1
    rec = score_sample(load_dataset(_dataset(tmp_path, m, "ones"))[0], DetectorSource("toy-bright"), 0.5)
    assert rec.error is None and rec.f1 == pytest.approx(1.0) and rec.warning is None
    rec = score_sample(load_dataset(_dataset(tmp_path, np.zeros((64, 64), np.uint8), "empty"))[0],
                       DetectorSource("toy-bright"), 0.5)
    assert "marks no pixel" in rec.warning
    big = np.kron(m * 255, np.ones((2, 2), np.uint8))
    rec = score_sample(load_dataset(_dataset(tmp_path, big, "big"))[0], DetectorSource("toy-bright"), 0.5)
    assert "mask resized" in rec.warning and rec.f1 == pytest.approx(1.0)


def test_eval_fails_nan_maps_names_the_file_and_exits_1(tmp_path):
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 255
    root = _dataset(tmp_path, m)
    pred = tmp_path / "pred"
    pred.mkdir()
    np.save(pred / "a.heatmap.npy", np.full((64, 64), np.nan, np.float32))
    r = imlf("eval", root, "--pred", pred)
    assert r.returncode == 1
    assert "a.png" in one_line_error(r) and "NaN" in r.stderr
    np.save(pred / "a.heatmap.npy", np.zeros((32, 32), np.float32))
    r = imlf("eval", root, "--pred", pred)
    assert r.returncode == 0 and "map resized" in r.stderr


def _pair(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rgb = np.asarray(Image.open(ROOT / "examples" / "Au" / "coffee.jpg").convert("RGB")).copy()
    orig = tmp_path / "orig.png"
    Image.fromarray(rgb).save(orig)
    fake = rgb.copy()
    fake[60:140, 100:220] = fake[60:140, 100:220][:, :, ::-1] // 2 + 100
    truth = np.zeros(rgb.shape[:2], bool)
    truth[60:140, 100:220] = True
    Image.fromarray(fake).save(tmp_path / "fake.png")
    return orig, truth


def test_make_mask_with_a_gray_original_compares_luminance(tmp_path):
    orig, truth = _pair(tmp_path)
    Image.open(orig).convert("L").save(tmp_path / "gray.png")
    r = imlf("make-mask", tmp_path / "gray.png", tmp_path / "fake.png", "-o", tmp_path / "m.png")
    assert r.returncode == 0, r.stderr
    assert "grayscale" in r.stderr
    mask = np.asarray(Image.open(tmp_path / "m.png")) > 127
    assert (mask & truth).sum() / (mask | truth).sum() > 0.8


def test_make_mask_refuses_a_far_smaller_original(tmp_path):
    orig, _ = _pair(tmp_path)
    im = Image.open(orig)
    im.resize((im.width // 10, im.height // 10)).save(tmp_path / "small.png")
    r = imlf("make-mask", tmp_path / "small.png", tmp_path / "fake.png", "-o", tmp_path / "m.png")
    assert r.returncode == 1 and "too small" in one_line_error(r)
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("damage, words", [
    (lambda m: m.update(prior=float("nan")), "prior"),
    (lambda m: m["calibration"].update(knots=[], probs=[]), "knots"),
    (lambda m: m["calibration"].update(probs=m["calibration"]["probs"][:-1]), "one length"),
    (lambda m: m["calibration"].update(probs=m["calibration"]["probs"][::-1]), "not monotone"),
])
def test_damaged_priors_are_refused_when_read(tmp_path, damage, words):
    from imlforensics.committee.detector import DEFAULT_PRIORS

    doc = json.loads(DEFAULT_PRIORS.read_text())
    damage(doc["members"]["ela"])
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ImlfError, match=words):
        load_detector("committee", priors=str(bad))


def test_16_bit_colour_is_named_as_a_conversion(tmp_path):
    import cv2

    p = tmp_path / "deep.png"
    cv2.imwrite(str(p), (np.random.default_rng(0).random((20, 30, 3)) * 65535).astype(np.uint16))
    img = load_image(p)
    assert img.conversion and "16-bit colour" in img.conversion


# ---------------------------------------------------------------- crashes, hangs, unbounded reads


def test_symlink_loops_and_links_are_reported(tmp_path, photo):
    loop = photo.parent / "loop.jpg"
    loop.symlink_to(loop)
    (photo.parent / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    r = imlf("detect", photo.parent, "-o", tmp_path / "out", "-m", "ela")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "loop.jpg: symlink loop" in r.stderr and "gone.jpg: broken symbolic link" in r.stderr
    assert (tmp_path / "out" / "photo.json").is_file()
    r = imlf("ensemble", loop, "-o", tmp_path / "e", "-m", "ela")
    assert r.returncode == 1 and "symlink loop" in one_line_error(r)


def test_fifos_devices_and_huge_files_are_refused_unread(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    sparse = tmp_path / "zeros.png"
    with open(sparse, "wb") as f:
        f.truncate(2_000_000_000)
    start = time.perf_counter()
    for path, words in ((fifo, "named pipe"), ("/dev/zero", "device"), (sparse, "not a recognised image")):
        with pytest.raises(ImageError, match=words):
            load_image(path)
    assert time.perf_counter() - start < 5
    r = imlf("detect", fifo, "-o", tmp_path / "out", timeout=60)
    assert r.returncode == 1 and "named pipe" in one_line_error(r)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _folder_of(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray((rng.random((160, 200, 3)) * 255).astype(np.uint8)).save(folder / f"i{i}.jpg", quality=85)
    return folder


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_ctrl_c_with_workers_prints_one_line_and_kill_9_takes_the_workers_along(tmp_path):
    folder = _folder_of(tmp_path, 40)
    for how in ("interrupt", "kill"):
        out = tmp_path / how
        # Ctrl-C as at a terminal: a test run started in the background of a shell without job
        # control inherits SIGINT ignored, and the command would rightly not see the signal
        proc = subprocess.Popen([sys.executable, "-m", "imlforensics", "ensemble", str(folder), "-o", str(out), "-j", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 240
        while time.time() < deadline and not ((out / "ledger.jsonl").exists() and (out / "ledger.jsonl").stat().st_size):
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert workers, "no worker processes were seen"
        if how == "interrupt":  # a terminal's Ctrl-C reaches the whole process group
            os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
        else:
            proc.kill()
            proc.communicate(timeout=60)
        deadline = time.time() + 15
        while time.time() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
            time.sleep(0.2)
        alive = [w for w in workers if Path(f"/proc/{w}").exists()
                 and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
        assert not alive, f"workers outlived the parent after {how}"


def test_a_damaged_ledger_is_read_around_and_a_folder_ledger_refused(tmp_path, photo):
    out = tmp_path / "out"
    assert imlf("ensemble", photo.parent, "-o", out, "-m", "ela").returncode == 0
    with open(out / "ledger.jsonl", "ab") as f:
        f.write(b"\xff\xfe not json\n{\"cut")
    r = imlf("ensemble", photo.parent, "-o", out, "-m", "ela", "--resume")
    assert r.returncode == 0 and "1 of 1 image(s) already done" in r.stderr, r.stderr
    out2 = tmp_path / "out2"
    (out2 / "ledger.jsonl").mkdir(parents=True)
    r = imlf("ensemble", photo.parent, "-o", out2, "-m", "ela")
    assert r.returncode != 0 and "is not a file" in one_line_error(r)


def test_nan_options_are_refused_up_front(photo, tmp_path):
    for args in (("ensemble", photo, "-T", "nan"), ("detect", photo, "--threshold", "nan"),
                 ("detect", photo, "--fail-above", "inf")):
        r = imlf(*args, "-o", tmp_path / "o")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    with pytest.raises(ImlfError):
        load_detector("committee", temperature=float("nan"))


@pytest.mark.parametrize("content, words", [
    ("original,tampered\n\u00e9.jpg,b.jpg\n".encode("latin-1"), "not UTF-8"),
    ("original,tampered\n".encode(), "no pairs"),
    (b"", "empty"),
    ("original,tampered\n" + "x" * 200_000 + ",b.jpg\n", "not a readable CSV row"),
])
def test_unreadable_pairs_files_get_one_line(tmp_path, content, words):
    from imlforensics.makemask.dataset import read_pairs_csv

    p = tmp_path / "pairs.csv"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ImlfError, match=words):
        read_pairs_csv(p)


def test_pairs_files_in_utf16_and_ragged_rows(tmp_path):
    from imlforensics.makemask.dataset import read_pairs_csv

    p = tmp_path / "pairs.csv"
    p.write_bytes("original,tampered\no/\u00e9.jpg,t/a.jpg\nonly-one-field\no/\u00e9.jpg,t/a.jpg\n".encode("utf-16"))
    pairs, problems = read_pairs_csv(p)
    assert [x.tampered.name for x in pairs] == ["a.jpg"] and pairs[0].original.name == "\u00e9.jpg"
    assert [w for w, _ in problems] == ["pairs.csv row 3", "pairs.csv row 4"]
    assert "listed twice" in problems[1][1]


def test_calibrate_with_one_tampered_image_or_an_unreadable_one(tmp_path):
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 255
    root = _dataset(tmp_path, m)
    r = imlf("calibrate", root, "-m", "ela", "-o", tmp_path / "p.json")
    assert r.returncode == 1 and "needs at least 2" in one_line_error(r)
    Image.open(root / "Tp" / "a.png").save(root / "Tp" / "b.png")
    Image.fromarray(m).save(root / "Gt" / "b.png")
    Image.open(root / "Tp" / "a.png").save(root / "Tp" / "c.png")
    Image.fromarray(m).save(root / "Gt" / "c.png")
    (root / "Tp" / "d.png").write_bytes(b"not an image")
    Image.fromarray(m).save(root / "Gt" / "d.png")
    r = imlf("calibrate", root, "-m", "ela", "-o", tmp_path / "p.json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads((tmp_path / "p.json").read_text())["members"]["ela"]["abstained_or_failed"] == 1


def test_hub_endpoint_errors_are_one_line_and_quick(tmp_path):
    env = {"IMLF_CACHE": str(tmp_path)}
    r = imlf("weights", "pull", "mesorch", "--repo", "a/b", env={**env, "HF_ENDPOINT": "not-a-url"})
    assert r.returncode == 1 and "not an http(s) URL" in one_line_error(r)
    import socket

    with socket.socket() as s:  # a port on this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    r = imlf("weights", "pull", "mesorch", "--repo", "a/b", env={**env, "HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert r.returncode == 1 and f"127.0.0.1:{port}" in one_line_error(r)
    assert time.perf_counter() - start < 20


def test_empty_arrays_are_refused_by_every_detector():
    for name in ("committee", "copymove", "ela"):
        with pytest.raises(ImageError, match="empty"):
            load_detector(name).predict(np.zeros((0, 0, 3), np.uint8))


def test_messages_keep_their_words(tmp_path, photo):
    r = imlf("detect", photo, "-o", tmp_path / "o", "--max-pixels", "1e3")
    assert "over the --max-pixels limit of 1000 pixels" in one_line_error(r)
    r = imlf("detect", photo, "-o", tmp_path / "o", "-m", "ela", "-O", "default_quality=abc")
    assert r.returncode == 2 and "default_quality='abc' must be a whole number" in one_line_error(r)
    (tmp_path / "bad.json").write_text('[["a.jpg"]]')
    r = imlf("eval", tmp_path / "bad.json")
    assert r.returncode == 2 and "[image, mask]" in one_line_error(r)
    r = imlf("make-mask", photo, photo, "-o", tmp_path / "mask.jpg")
    assert r.returncode == 2 and "PNG" in one_line_error(r)


def test_large_images_are_bounded_by_the_memory_available(monkeypatch, photo):
    from imlforensics.detectors import base

    monkeypatch.setattr(base, "available_memory", lambda: 100_000_000)
    monkeypatch.setattr(load_detector("ela").__class__, "bytes_per_pixel", 1e5)
    with pytest.raises(ImageError, match="too large for the memory available"):
        load_detector("ela").predict(photo)


def test_pillow_bomb_warnings_stay_off_stderr(monkeypatch, photo):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_detector("ela").predict(load_image(photo))
        load_detector("jpeg-grid").predict(load_image(photo))
