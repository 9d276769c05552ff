"""Prefect entrypoint: ``flows/cutover.py:cutover`` (loaded by file path, never imported).

Deploy it with Prefect as usual, e.g.::

    prefect deploy flows/cutover.py:cutover -n customs-reorg-2025

and give it the parameters ``cutbook run`` would: build them with
``cutbook.engine.prefect.parameters.to_parameters(loaded, settings)``. They
describe the run completely, so a deployment's flow run gets exactly the
settings ``cutbook run`` uses; day to day, ``cutbook run`` calls the same
flow in-process.
"""

from cutbook.engine.prefect.flow import cutover

__all__ = ["cutover"]

if __name__ == "__main__":
    import sys

    from cutbook.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
