"""remote-docker: run Airflow tasks as containers on remote Docker daemons over mutual TLS."""

__version__ = "0.2.0"
