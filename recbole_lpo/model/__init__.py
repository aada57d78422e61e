"""Plugin models, one file per model: <kind>_recommender/<name.lower()>.py."""
