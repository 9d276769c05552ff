"""Prefect entrypoint: ``flows/cutover.py:cutover`` (loaded by file path, never imported).

``cutbook schedule RUNBOOK --at ISO`` deploys it (one deployment per runbook, on the
work pool ``cutbook``) and ``cutbook serve`` runs it; ``prefect.yaml`` declares the same
deployment for ``prefect deploy``.

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
