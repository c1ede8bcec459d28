"""The demo end to end in its CI-sized version (--quick): synthetic data -> Ray Data ingest -> Ray
Train of TIN and TSN -> evaluation -> summary.json, MLflow runs and plots, and a re-run that reuses
everything. (The accuracy goal, TIN clearly above TSN on mirrored classes, is not reached yet by
the recipe in this budget, so it is not asserted here.)"""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from pipelines.demo import EXPERIMENT, DemoConfig, comparison_table, run_demo


def test_quick_demo_runs_end_to_end_and_reuses_its_work(ray_session, tmp_path):
    config = DemoConfig.quick(str(tmp_path / "demo"))
    summary = run_demo(config, log=print)

    assert set(summary) == set(config.models)
    saved = json.loads((config.root / "summary.json").read_text())
    assert saved == summary
    for row in summary.values():
        assert 0 <= row["mirrored_top1"] <= 1 and 0 <= row["top1"] <= 1
    assert "tsn_r18" in comparison_table(summary, len(config.motions))

    client = MlflowClient(config.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    names = {run.info.run_name for run in runs}
    assert {"demo-tin_r18", "demo-tsn_r18", "evaluate-tin_r18-val-1x1", "evaluate-tsn_r18-val-1x1"} <= names
    assert (config.root / "plots" / "tin_r18_confusion.png").is_file()

    again = run_demo(config, log=print)  # everything is reused: no retraining
    assert again == summary
