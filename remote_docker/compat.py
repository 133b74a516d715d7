"""What differs between the Airflow versions we support, decided here and nowhere else."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException, AirflowTaskTimeout

__all__ = ["AirflowException", "AirflowFailException", "AirflowSkipException", "AirflowTaskTimeout"]
