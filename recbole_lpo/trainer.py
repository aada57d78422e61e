"""Custom trainers, looked up as ``<Model>Trainer`` by ``recbole_lpo.utils.get_trainer``.

Models without one use RecBole's trainer for their type.
"""
