"""Running runbooks.

The semantics are plain asyncio (``runner`` wires ``scheduler``, ``gates``,
``executor``, ``calls``, ``rollback``, ``restore`` and ``context`` around a
shared ``state``); ``session`` prepares a run; ``launch`` is the API that
starts, resumes and answers runs. Prefect lives in the ``prefect``
subpackage and nowhere else in cutbook.
"""
