"""Study orchestration: one Optuna study per (model, GPU, dtype).

``run.run_study`` opens the study (setup.py), starts the trial worker (worker.py, with the
GPU backend or the simulated one), runs the objective (objective.py) under a time budget with
a live progress line (progress.py), and prints the closing summary (summary.py).
"""
