"""Tables and plots of a finished grid (placeholder while the report is written)."""


def write_reports(resolved, args, user_overrides):
    return []
