"""The Ray internals in pipelines.ray_internals still exist and still do what the project relies
on, and the installed Ray is checked against the tested range. Each check runs in a fresh
interpreter: Ray reads its switches at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from pipelines.ray_internals import (
    RAY_DATA_LOGGING,
    RAY_DATA_LOGGING_FILE,
    RAY_DATA_USAGE_SWITCH,
    SINGLE_NODE_SWITCH,
    STATE_API_ADDRESS,
)
from pipelines.ray_runtime import ALLOW_UNTESTED_RAY, UnsupportedRayError, check_ray_version, ray_requirement

REPO = Path(__file__).resolve().parents[2]


def fresh_python(code: str, **env: str) -> dict:
    """Run ``code`` in a new interpreter (no Ray started, no Ray variables inherited) and return
    the JSON it prints last."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_loopback_switch_is_the_constant_ray_consults_for_the_node_address():
    found = fresh_python("""
        import json
        import ray
        from ray._private import ray_constants, services
        from pipelines.ray_internals import address_this_process_by_loopback
        address_this_process_by_loopback()
        print(json.dumps({"variable": ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR,
                          "address": services.get_node_ip_address()}))
    """)
    assert found == {"variable": SINGLE_NODE_SWITCH, "address": "127.0.0.1"}


def test_state_api_clients_take_their_address_from_the_variable_before_guessing():
    found = fresh_python(
        """
        import json
        from ray._private import ray_constants
        from ray.dashboard.utils import get_address_for_submission_client
        print(json.dumps({"variable": ray_constants.RAY_API_SERVER_ADDRESS_ENVIRONMENT_VARIABLE,
                          "address": get_address_for_submission_client(None)}))
    """,
        RAY_API_SERVER_ADDRESS="http://127.0.0.1:9",
    )
    assert found == {"variable": STATE_API_ADDRESS, "address": "http://127.0.0.1:9"}


def test_ray_data_takes_the_project_logging_file_console_at_warning_file_at_debug():
    found = fresh_python(
        """
        import json, logging
        import ray.data
        from ray.data._internal.logging import SessionFileHandler
        logger = logging.getLogger("ray.data")
        print(json.dumps({
            "level": logger.level,
            "console": [h.level for h in logger.handlers if isinstance(h, logging.StreamHandler)],
            "files": [h.level for h in logger.handlers if isinstance(h, SessionFileHandler)],
        }))
    """,
        **{RAY_DATA_LOGGING: str(RAY_DATA_LOGGING_FILE)},
    )
    assert found == {"level": 10, "console": [30], "files": [0]}


@pytest.mark.slow
@pytest.mark.ray  # starts a local Ray in its fresh interpreter
def test_the_usage_switch_keeps_ray_data_from_polling_prometheus_and_only_the_switch_does():
    """With the switch a dataset runs and no usage poller thread starts; the same process without
    it starts one (so the check can fail). ``ray.init`` turns Ray's usage stats off in the Ray it
    starts; a cluster started by ``ray start``, where the switch matters, has them on."""
    found = fresh_python(
        f"""
        import json, os, threading
        import ray, ray.data
        from pipelines.ray_internals import address_this_process_by_loopback
        address_this_process_by_loopback()
        ray.init(address="local", num_cpus=1, include_dashboard=False)
        os.environ["RAY_USAGE_STATS_ENABLED"] = "1"
        def pollers():
            return sum(thread.name == "data-usage-metrics-poller" for thread in threading.enumerate())
        os.environ["{RAY_DATA_USAGE_SWITCH}"] = "1"
        switched = (ray.data.range(10).sum("id"), pollers())
        del os.environ["{RAY_DATA_USAGE_SWITCH}"]
        unswitched = (ray.data.range(10).sum("id"), pollers())
        ray.shutdown()
        print(json.dumps({{"switched": switched, "unswitched": unswitched}}))
    """
    )
    assert found == {"switched": [45, 0], "unswitched": [45, 1]}


def test_the_installed_ray_is_in_the_tested_range_and_others_are_refused(monkeypatch):
    assert ray_requirement().startswith("ray[default,data,train,tune]")
    check_ray_version()  # the installed release
    monkeypatch.delenv(ALLOW_UNTESTED_RAY, raising=False)
    for untested in ("2.59.2", "2.61.0", "3.0.0"):
        with pytest.raises(
            UnsupportedRayError,
            match=rf"Ray {untested} is installed, .* tested with ray.*2\.60.*{ALLOW_UNTESTED_RAY}=1",
        ):
            check_ray_version(untested)
    monkeypatch.setenv(ALLOW_UNTESTED_RAY, "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_ray_version("2.61.0")
    assert any("Ray 2.61.0 is installed" in str(warning.message) for warning in caught)


def test_the_train_context_hands_workers_the_run_storage_the_driver_configured(tmp_path):
    """``run_storage`` reads the filesystem and run folder off the ``StorageContext`` that Ray Train
    workers get from ``get_storage()``; both attributes still carry what ``RunConfig`` was given."""
    import pyarrow.fs
    from ray.train.v2._internal.execution.context import TrainContext
    from ray.train.v2._internal.execution.storage import StorageContext

    filesystem = pyarrow.fs.LocalFileSystem()
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="run", storage_filesystem=filesystem)
    assert callable(TrainContext.get_storage)
    assert storage.storage_filesystem is filesystem and storage.experiment_fs_path == str(tmp_path / "run")
