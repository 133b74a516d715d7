"""Airflow's own floor for P1's path at defaults: a worker starts each task, which defers at once to a T s timer that
ends it in the triggerer (``end_from_trigger``), as ours does with a long task: no container, no code of ours."""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import DAG, BaseOperator
from p1_common import START, N, T


class DeferAtOnce(BaseOperator):
    def execute(self, context):
        self.defer(trigger=TimeDeltaTrigger(dt.timedelta(seconds=T), end_from_trigger=True), method_name="execute_complete")

    def execute_complete(self, context, event=None):
        return None


with DAG("bench_p1_airflow_floor", schedule=None, start_date=START, catchup=False):
    for i in range(N):
        DeferAtOnce(task_id=f"c{i:02d}")
