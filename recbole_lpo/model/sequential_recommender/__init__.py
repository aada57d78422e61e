"""Sequential models of the plugin."""
