"""The task kinds the harness runs, by the name `--task` and config.json's
architectures give them (predictor/checkpoint.py). A new kind is a room of
its own beside predictor/classify/ and predictor/generate/, a TaskKind
(predictor/task_kind.py), and one line here; the stage wiring does not change.
"""
from __future__ import annotations

from predictor.classify.task import ClassifyTask
from predictor.generate.task import GenerateTask
from predictor.task_kind import TaskKind

TASK_KINDS: dict[str, type[TaskKind]] = {kind.name: kind for kind in (ClassifyTask, GenerateTask)}
