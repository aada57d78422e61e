"""Plugin models, one file per model: <kind>_recommender/<name.lower()>.py;
``backbone.py`` holds what several models do with their backbone."""
