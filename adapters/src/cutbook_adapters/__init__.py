"""cutbook's built-in adapters, found through the ``cutbook.adapters`` entry points.

Nothing is imported here: each adapter module is loaded only when a runbook
names it, so a slow or broken dependency (apprise, a database driver) costs
only the runbooks that use it.
"""
