"""Tail-item metrics and the collector resources they need, for every model."""
