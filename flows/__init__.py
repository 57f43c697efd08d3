"""Prefect flows that run the DVC DAG: ``clean_dataset`` (``python -m flows.clean_dataset``)."""
