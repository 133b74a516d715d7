# Airflow 3.3 with remote-docker installed. Used by every Airflow service in docker-compose.yaml
# and by its one-shot `certs` service.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 pyproject.toml README.md LICENSE /opt/remote-docker/
COPY --chown=airflow:0 remote_docker /opt/remote-docker/remote_docker
RUN pip install --no-cache-dir "apache-airflow==3.3.2" "/opt/remote-docker" \
        "aiodocker==0.27.0" "docker==7.2.0" "cryptography>=43,<51" "anyio>=4,<5"
