"""Put on PYTHONPATH by ``bench/callpath.py``: every process records each function of remote-docker it calls (once per
process), so a task's path through our code can be read per process (worker, triggerer, DAG processor)."""

import json
import os
import sys
import threading
import time

_REPORT = os.environ.get("REMOTE_DOCKER_CALL_REPORT")

if _REPORT:
    _seen: set = set()
    _lock = threading.Lock()

    def _profile(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        path = code.co_filename
        # functions only: not a module's or a class body's code (CO_OPTIMIZED), nor a comprehension or lambda
        if "/remote_docker/" not in path or code.co_name.startswith("<") or not code.co_flags & 0x1:
            return
        key = (os.getpid(), path, code.co_firstlineno)
        if key in _seen:
            return
        with _lock:
            _seen.add(key)
            record = {"pid": os.getpid(), "argv": sys.argv[1:3], "module": path.rsplit("/remote_docker/", 1)[1],
                      "function": code.co_qualname, "at": time.time()}
            with open(_REPORT, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    sys.setprofile(_profile)
    threading.setprofile(_profile)
