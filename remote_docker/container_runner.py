"""Runs a ``@task.remote_docker`` callable inside the container.

This file is copied into the container (with put_archive) next to ``call.json``, the
callable's source and its serialized arguments; it needs only the standard library (and
cloudpickle or dill when that serializer is chosen). The worker reads the result file back and
decodes it; nothing here runs on Airflow's side.

Exit codes: the callable's own exception -> 1 with its traceback on stderr; the arguments
can't be read -> 97; the result can't be written -> 98. Either of the last two prints one
line starting with ``remote-docker-error:``.
"""

import importlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ERROR_PREFIX = "remote-docker-error: "
CANT_READ_ARGUMENTS, CANT_WRITE_RESULT = 97, 98


def fail(code, message):
    print(ERROR_PREFIX + message, file=sys.stderr, flush=True)
    sys.exit(code)


def main():
    with open(os.path.join(HERE, "call.json")) as handle:
        call = json.load(handle)
    serializer, name = call["serializer"], call["function"]
    python = "Python " + sys.version.split()[0]

    if serializer == "json":
        codec = json
    else:
        try:
            codec = importlib.import_module(serializer)
        except ImportError:
            fail(CANT_READ_ARGUMENTS, f"the container's {python} can't import {serializer}; "
                                      f"install it in the image or use serializer='pickle'")
    worker_minor = ".".join(call["worker_python"].split(".")[:2])
    if serializer in ("cloudpickle", "dill") and worker_minor != f"{sys.version_info[0]}.{sys.version_info[1]}":
        # cloudpickle and dill ship functions as bytecode, which only the same Python minor runs correctly
        fail(CANT_READ_ARGUMENTS, f"the container's {python} can't run what {serializer} wrote on the worker's "
                                  f"Python {call['worker_python']} (it needs the same Python minor on both sides); "
                                  f"use an image with Python {worker_minor}, or serializer='pickle'")
    try:
        with open(os.path.join(HERE, call["input"]), "rb") as handle:
            raw = handle.read()
        arguments = json.loads(raw.decode("utf-8")) if serializer == "json" else codec.loads(raw)
    except Exception as err:
        fail(CANT_READ_ARGUMENTS, f"the container's {python} can't read the arguments written with {serializer} "
                                  f"by the worker's Python {call['worker_python']} ({type(err).__name__}: {err}); "
                                  f"use an image with a matching Python, or serializer='json'")

    namespace = {"__name__": "__remote_docker_task__"}
    with open(os.path.join(HERE, "source.py")) as handle:
        source = handle.read()
    # blank lines up to where the function starts in its DAG file: a traceback names the DAG file's own lines
    first_line = call.get("first_line", 1)
    exec(compile("\n" * (first_line - 1) + source, call["source_file"], "exec"), namespace)
    result = namespace[name](*arguments["args"], **arguments["kwargs"])

    try:
        data = json.dumps(result).encode("utf-8") if serializer == "json" else codec.dumps(result)
    except Exception as err:
        fail(CANT_WRITE_RESULT, f"the return value of {name} ({type(result).__name__}) can't be serialized with "
                                f"{serializer} ({type(err).__name__}: {err}); return plain data or pick another serializer")
    partial = os.path.join(HERE, "result.partial")
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, os.path.join(HERE, "result.out"))


if __name__ == "__main__":
    main()
