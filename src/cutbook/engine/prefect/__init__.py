"""Everything cutbook does with Prefect, and the only place in cutbook that imports it.

Prefect is for watching and for people: task runs, pause forms, artifacts,
the UI. The engine's semantics never depend on it; they reach it only
through the :class:`~cutbook.engine.state.Bridge`. This package's
``__init__`` imports nothing, because Prefect reads its settings from the
environment when first imported: :mod:`.server` must be able to set them
first.
"""
