"""Reproduction grid of the paper's experiments (``python -m recbole_lpo.reproduce``).

``catalogue`` (profiles, experiments, groups), ``cache`` (run keys), ``runner``
(training the grid), ``report`` (tables, t-tests, selection, plots).
"""
