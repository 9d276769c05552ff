"""Prefect entrypoint: ``flows/cutover.py:cutover`` (loaded by file path, never imported).

Deploy it with Prefect as usual, e.g.::

    prefect deploy flows/cutover.py:cutover -n customs-reorg-2025

and pass ``runbook_path``, ``runbook_sha256`` and the other parameters that
``cutbook run`` would; day to day, ``cutbook run`` calls the same flow in-process.
"""

from cutbook.engine.flow import cutover

__all__ = ["cutover"]

if __name__ == "__main__":
    import sys

    from cutbook.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
