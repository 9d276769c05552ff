"""cutbook: cutover runbooks as code, run as Prefect flows, with a tamper-evident journal."""

__version__ = "0.1.0"
