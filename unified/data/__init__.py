"""The data layer: what the model is trained and scored on.

    task_base.py, tasks_numeric.py, tasks_symbolic.py, tasks_recall.py   the procedural tasks
    tasks.py           the task registry (`TASKS`, `get_task`, `resolve_tasks`)
    batches.py         held-out splits and cells, the phase curriculum, deterministic batches
    task_curriculum.py the per-task competence curriculum
    scoring.py         strict scoring of examples, cell summaries and standard errors (shared by
                       the trainer's validation and the evaluation suites)

It builds on `unified.models` and `unified.text` and never imports the train, evals or
compare layers.
"""
