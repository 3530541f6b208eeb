"""Sequence classification (ERNIE 3.0): the task kind (task.py), the exported
classifier and its runner (classifier.py), and INT8 under an accuracy guard
(int8_guard.py) with rows near a tie re-run in fp32 (low_margin.py).
"""
