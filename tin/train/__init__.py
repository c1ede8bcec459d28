"""The training loop and what it needs, without Ray: config, the run's setup against the dataset
root, schedules, the step, metrics, checkpoints, progress reporting and the DDP helpers. ``loop``
runs the epochs on any ``Session`` (Ray Train's is ``pipelines.train_worker``, a single process's
``local``); ``progress`` (and so ``loop``, ``local`` and ``setup``) imports MLflow; ``step`` runs
without it, and ``checkpoint`` and ``config`` stay light for inference and export."""
