"""The Celery baseline of `orion bench cluster`: what a user would pick instead, on this machine.

Celery with a Redis broker (tasks acknowledged late, after they ran) and Redis results, a
worker of 8 threads; `python3 celery_baseline.py BROKER TASKS` starts the worker, waits for it,
sends TASKS empty tasks at once and waits for every result; prints one JSON line, with the CPU
each part (this client, the worker, the machine's Redis server) spent per task meanwhile.
Nothing of it is durable the way Orion's tasks are (no database, no event log).
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


def cpu_seconds(pid):
    """The CPU time (user and system) process `pid` has spent, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command may hold spaces and parentheses: the fields start after the last `)`.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu():
    """The CPU seconds so far of each process of this machine named redis-server, by pid."""
    spent = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().startswith("redis-server"):
                    spent[entry] = cpu_seconds(entry)
        except (OSError, ValueError, IndexError):
            pass  # gone meanwhile
    return spent


def parts(worker):
    """CPU seconds so far of the client and the worker, and of each Redis process."""
    return time.process_time(), cpu_seconds(worker), redis_cpu()


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
        before = parts(worker.pid)
        started = time.perf_counter()
        results = [noop.apply_async() for _ in range(tasks)]
        for result in results:
            result.get(timeout=600)
        elapsed = time.perf_counter() - started
        after = parts(worker.pid)
        # A Redis process alive at the end counts from the start, or from its own start.
        redis = sum(t - before[2].get(pid, 0.0) for pid, t in after[2].items())
        per_task = 1000 / max(tasks, 1)
        spent = [(after[0] - before[0]) * per_task, (after[1] - before[1]) * per_task,
                 redis * per_task]
        print(json.dumps({"tasks": tasks, "seconds": elapsed, "tasks_per_s": tasks / elapsed,
                          "celery": __import__("celery").__version__,
                          "cpu_ms_per_task": dict(zip(["client", "worker", "redis"], spent))}))
    finally:
        worker.terminate()
        worker.wait(timeout=30)


if __name__ == "__main__":
    main()
