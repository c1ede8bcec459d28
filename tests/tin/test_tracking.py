"""Where the runs of a local sqlite store keep their artifacts (tin.tracking)."""

from __future__ import annotations

import mlflow

from tin import tracking


def test_a_local_stores_artifacts_live_beside_its_database_not_in_the_working_directory(tmp_path, monkeypatch):
    working = tmp_path / "elsewhere"
    working.mkdir()
    monkeypatch.chdir(working)
    uri = tracking.default_tracking_uri(tmp_path / "store")
    (tmp_path / "store").mkdir()
    tracking.start_run(uri, "experiment", "key", "run")
    try:
        mlflow.log_text("hello", "notes/hello.txt")
        artifact_uri = mlflow.get_artifact_uri()
    finally:
        mlflow.end_run()
    assert artifact_uri.startswith((tmp_path / "store" / "mlartifacts").as_uri())
    assert [path.name for path in (tmp_path / "store" / "mlartifacts").rglob("hello.txt")] == ["hello.txt"]
    assert not list(working.iterdir())
    tracking.start_run(uri, "experiment", "key", "run")  # the experiment exists: reused, the run continued
    try:
        assert mlflow.active_run().info.artifact_uri == artifact_uri
    finally:
        mlflow.end_run()
