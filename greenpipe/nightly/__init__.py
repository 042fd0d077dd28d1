"""The nightly run's logic: what flows/nightly.py composes.

    graph.py    run a stage DAG with bounded concurrency; a failure skips only its dependents
    stages.py   one DVC stage through `dvc repro --single-item` (DVC decides), lock contention, DVC status,
                pull / push, dvc.lock entry order
    results.py  the metrics rows per variant x device, the results branch (one commit per night)
    gate.py     regression thresholds against the last successful nightly
    report.py   the markdown report and the summary table

Nothing here imports Prefect: the flow wraps these functions in tasks.
"""
