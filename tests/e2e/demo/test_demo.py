"""The demo end to end in its CI-sized version (--quick): synthetic data (annotation lists sorted by
class, as real releases are) -> Ray Data ingest -> Ray Train of TIN and TSN -> evaluation ->
summary.json, MLflow runs and plots, and a re-run that reuses everything; TIN must tell the
mirrored classes (left/right) apart, TSN cannot."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from pipelines.demo import EXPERIMENT, DemoConfig, comparison_table, run_demo


@pytest.mark.slow
def test_quick_demo_shows_tin_beating_tsn_on_mirrored_classes_and_reuses_its_work(ray_session, tmp_path):
    config = DemoConfig.quick(str(tmp_path / "demo"))
    summary = run_demo(config, log=print)

    assert set(summary) == set(config.models)
    saved = json.loads((config.root / "summary.json").read_text())
    assert saved == summary
    tin, tsn = summary["tin_r18"], summary["tsn_r18"]
    # TSN sees an unordered set of frames: at most chance (0.5) on a mirrored pair, up to sampling noise.
    assert tsn["mirrored_top1"] <= 0.65, summary
    assert tin["mirrored_top1"] >= tsn["mirrored_top1"] + 0.25, summary
    assert tin["top1"] >= tsn["top1"] + 0.2, summary
    assert "tsn_r18" in comparison_table(summary, len(config.motions))

    client = MlflowClient(config.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    names = {run.info.run_name for run in runs}
    assert {"demo-tin_r18", "demo-tsn_r18", "evaluate-tin_r18-val-1x1", "evaluate-tsn_r18-val-1x1"} <= names
    assert (config.root / "plots" / "tin_r18_confusion.png").is_file()

    again = run_demo(config, log=print)  # everything is reused: no retraining
    assert again == summary
