"""Training curves reach TensorBoard event files beside metrics.jsonl when tensorboardX is installed,
and nothing changes when it is not. The event files are read back here with the TFRecord framing
and its masked CRC-32C checked by an implementation in this file, not by the writer's code."""

import json
import pathlib
import re
import struct
import sys

import numpy as np
import pytest

from w2sjax.experiment import MetricsLog
from w2sjax.runner import tensorboard_log

RECORDS = [
    {"stage": "weak__glove-bow__seed0", "step": 10, "loss": 0.69, "grad_norm": 1.5},
    {"stage": "weak__glove-bow__seed0", "step": 20, "loss": 0.52, "grad_norm": 1.1},
    {"stage": "weak__glove-bow__seed0", "step": 20, "val_accuracy": 0.71},
    {"stage": "w2s__glove-bow__hf:/a/very/long/path/to/a/model__logconf__seed0", "step": 10, "loss": 0.9},
]


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path: pathlib.Path) -> list[bytes]:
    """The payloads of a TFRecord file: length (u64), its masked CRC, data, the data's masked CRC."""
    blob, out, i = path.read_bytes(), [], 0
    while i < len(blob):
        (length,) = struct.unpack("<Q", blob[i:i + 8])
        assert struct.unpack("<I", blob[i + 8:i + 12])[0] == _masked(blob[i:i + 8])
        data = blob[i + 12:i + 12 + length]
        assert struct.unpack("<I", blob[i + 12 + length:i + 16 + length])[0] == _masked(data)
        out.append(data)
        i += 16 + length
    return out


def _scalars(logdir: pathlib.Path) -> list[tuple[str, int, float, float]]:
    """(tag, step, value, wall time) of every scalar in the event files under ``logdir``."""
    from tensorboardX.proto import event_pb2

    out = []
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {logdir}"
    for path in files:
        for data in _records(path):
            event = event_pb2.Event.FromString(data)
            for value in event.summary.value:
                scalar = value.simple_value if value.HasField("simple_value") else value.tensor.float_val[0]
                out.append((value.tag, event.step, scalar, event.wall_time))
    return out


def test_metrics_reach_tensorboard_beside_metrics_jsonl(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    monkeypatch.delenv("W2SJAX_TENSORBOARD", raising=False)
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for record in RECORDS:
        log(record)
    tensorboard_log.flush_all()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # TensorBoard tags allow letters, digits and _ . / - only; the rest becomes _.
    expected = sorted((f"{k}/{re.sub(r'[^A-Za-z0-9_./-]', '_', r['stage'])}", r["step"], v, r["time"]) for r in lines
                      for k, v in r.items() if k not in ("stage", "step", "time"))
    got = sorted(_scalars(tmp_path / "tensorboard"))
    assert [(t, s) for t, s, _, _ in got] == [(t, s) for t, s, _, _ in expected]
    np.testing.assert_allclose([v for _, _, v, _ in got], [v for _, _, v, _ in expected], rtol=1e-6)  # float32
    np.testing.assert_allclose([w for *_, w in got], [w for *_, w in expected], atol=1e-3)


def test_turned_off_or_not_installed_writes_only_metrics_jsonl(tmp_path, monkeypatch):
    for setup in ("off", "absent"):
        folder = tmp_path / setup
        folder.mkdir()
        if setup == "off":
            monkeypatch.setenv("W2SJAX_TENSORBOARD", "0")
        else:
            monkeypatch.delenv("W2SJAX_TENSORBOARD", raising=False)
            monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` raises ImportError
        assert not tensorboard_log.available()
        log = MetricsLog(folder / "metrics.jsonl")
        for record in RECORDS:
            log(record)
        tensorboard_log.flush_all()
        assert sorted(p.name for p in folder.iterdir()) == ["metrics.jsonl"]
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == len(RECORDS)


def test_writing_events_never_imports_pytorch(tmp_path):
    """tensorboardX imports torch when it can (seconds of start-up); the writer keeps it out, and
    a later `import torch` still works. A package named torch on the path records its import."""
    pytest.importorskip("tensorboardX")
    import os
    import subprocess

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        "import os\nopen(os.environ['TORCH_MARK'], 'a').write('imported\\n')\n\n\nclass Tensor:\n    pass\n")
    script = (
        "import json, os, pathlib, sys\n"
        "from w2sjax.experiment import MetricsLog\n"
        "from w2sjax.runner import tensorboard_log\n"
        f"log = MetricsLog(pathlib.Path({str(tmp_path / 'run')!r}) / 'metrics.jsonl')\n"
        f"for r in {RECORDS!r}: log(r)\n"
        "tensorboard_log.flush_all()\n"
        "print(json.dumps(['torch' in sys.modules, os.path.exists(os.environ['TORCH_MARK'])]))\n"
        "import torch\n"
        "print(json.dumps(os.path.exists(os.environ['TORCH_MARK'])))\n")
    (tmp_path / "run").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "W2SJAX_TENSORBOARD": "1",
           "TORCH_MARK": str(tmp_path / "mark")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert before == [False, False]  # events written, torch never imported
    assert after is True  # the stand-in imports normally afterwards
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
