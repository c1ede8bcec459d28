"""The final model of a training run as an MLflow model: logged with the function that
``RunRecorder.finish`` uses (no Ray Train run needed), then loaded by ``mlflow.pyfunc`` in a fresh
process from the sqlite store, by run model URI and by registered name, giving the eager logits."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch

from tests.tin.evaluate.conftest import FRAMES, SIZE, write_checkpoint
from tin import tracking
from tin.checkpoint import load_model, read_checkpoint
from tin.export import example_clips

LOADER = """
import json, sys
import mlflow, numpy as np

mlflow.set_tracking_uri(sys.argv[1])
clips = np.load(sys.argv[2])
for index, uri in enumerate(sys.argv[3:]):
    logits = mlflow.pyfunc.load_model(uri).predict(clips)
    np.save(f"{sys.argv[2]}.{index}.npy", logits)
print(json.dumps({"tin": sys.modules["tin"].__file__}))
"""


@pytest.mark.slow  # an export or a fresh process: > 10 s
def test_logged_model_loads_in_a_fresh_process_with_the_eager_logits(tmp_path):
    classes = ["left", "right", "static"]
    checkpoint = write_checkpoint(tmp_path / "run", "tin_r18", str(tmp_path / "data"), classes)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.start_run(store, "models", "key", "run")  # its artifacts beside the store
    try:
        info = tracking.log_video_model(read_checkpoint(checkpoint), registered_model_name="tin-test")
    finally:
        mlflow.end_run()
    assert info.registered_model_version == 1
    assert info.signature.inputs.to_dict()[0]["tensor-spec"] == {
        "dtype": "float32",
        "shape": (-1, FRAMES, 3, SIZE, SIZE),
    }

    clips = example_clips(FRAMES, SIZE, batch=3)
    np.save(tmp_path / "clips.npy", clips.numpy())
    done = subprocess.run(
        [sys.executable, "-c", LOADER, store, str(tmp_path / "clips.npy"), info.model_uri, "models:/tin-test/1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "/code/tin/" in loaded["tin"]  # unpickling imported the package the model carries

    model, _ = load_model(checkpoint)
    with torch.no_grad():
        eager = model(clips).numpy()
    for index in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"clips.npy.{index}.npy"), eager, rtol=1e-5, atol=1e-5)
