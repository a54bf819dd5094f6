"""The Celery baseline of `orion bench cluster`: what a user would pick instead, on this machine.

Celery with a Redis broker (tasks acknowledged late, after they ran) and Redis results, a
worker of 8 threads; `python3 celery_baseline.py BROKER TASKS` starts the worker, waits for it,
sends TASKS empty tasks at once and waits for every result; prints one JSON line. Nothing of it
is durable the way Orion's tasks are (no database, no event log).
"""

import json
import os
import subprocess
import sys
import time

from celery import Celery

QUEUE = os.environ.get("ORION_BENCH_QUEUE", "orion-bench")
BROKER = os.environ.get("ORION_BENCH_BROKER", "redis://127.0.0.1:6379/0")

app = Celery("celery_baseline", broker=BROKER, backend=BROKER)
app.conf.update(
    task_acks_late=True,
    task_default_queue=QUEUE,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="orion_bench_noop")
def noop():
    return None


def main():
    tasks = int(sys.argv[1])
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_baseline", "worker", "--pool", "threads",
         "--concurrency", "8", "-Q", QUEUE, "-l", "warning", "--without-heartbeat",
         "--without-gossip", "--without-mingle"],
        cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # Ready when it answers a task.
        noop.apply_async().get(timeout=60)
        started = time.time()
        results = [noop.apply_async() for _ in range(tasks)]
        for result in results:
            result.get(timeout=600)
        elapsed = time.time() - started
        print(json.dumps({"tasks": tasks, "seconds": elapsed, "tasks_per_s": tasks / elapsed,
                          "celery": __import__("celery").__version__}))
    finally:
        worker.terminate()
        worker.wait(timeout=30)


if __name__ == "__main__":
    main()
