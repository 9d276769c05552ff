"""Running runbooks. The only part of core that imports Prefect (in ``bridge``,
``flow`` and ``server``); ``runner`` holds the semantics in plain asyncio."""
