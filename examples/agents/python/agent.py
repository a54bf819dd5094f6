#!/usr/bin/env python3
"""An Orion agent outside Orion: serves a declared kind over NATS JetStream.

It speaks the protocol of docs/agents.md and nothing else of Orion's: it pulls assignments
from the kind's work queue, reports `started`, works (telling JetStream it is still working,
so a long task is not redelivered), reports `completed` or `failed`, and acknowledges. A
message it cannot read, or one delivered too often, goes to the dead-letter subject with the
reason. Reports carry deterministic ids, so a redelivered assignment reports nothing twice.

The kind served here, `wordcount`, counts the words and lines of `input.text`; with
`input.delay_ms` it takes that long (to show in-progress heartbeats and redelivery).

    python3 agent.py --nats nats://127.0.0.1:4222 --prefix orion --kind wordcount --node py-1
"""

import argparse
import asyncio
import datetime
import json
import signal
import sys
import uuid

import nats
from nats.js.api import AckPolicy, ConsumerConfig

SCHEMA_VERSION = 1


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def envelope(node, body_type, payload, task_id=None, causation_id=None):
    message = {
        "v": SCHEMA_VERSION,
        "id": str(uuid.uuid4()),
        "correlation_id": task_id or str(uuid.uuid4()),
        "node": node,
        "sent_at": now(),
        "type": body_type,
        "payload": payload,
    }
    if task_id:
        message["task_id"] = task_id
    if causation_id:
        message["causation_id"] = causation_id
    return json.dumps(message).encode()


def wordcount(task_input):
    text = task_input.get("text", "") if isinstance(task_input, dict) else ""
    return {"words": len(text.split()), "lines": len(text.splitlines())}


class Agent:
    def __init__(self, args):
        self.args = args
        self.prefix = args.prefix
        self.kind = args.kind
        self.node = args.node
        self.in_flight = 0
        self.stopping = asyncio.Event()

    async def report(self, js, assignment, state, outcome, causation_id):
        task_id = assignment["task"]["id"]
        attempt = assignment["attempt"]
        step = assignment.get("step", {}).get("step", "work")
        payload = {"task_id": task_id, "agent": self.kind, "attempt": attempt, "outcome": outcome}
        # The id names (task, attempt, step, state): a redelivery repeats no report.
        msg_id = f"report-{task_id}-{attempt}-{step}-{state}"
        body = envelope(self.node, "work.report", payload, task_id, causation_id)
        await js.publish(f"{self.prefix}.results", body, headers={"Nats-Msg-Id": msg_id})

    async def dead_letter(self, js, msg, reason, attempts):
        rest = msg.subject[len(self.prefix) + 1:]
        body = {
            "reason": reason,
            "subject": msg.subject,
            "attempts": attempts,
            "payload": msg.data.decode("utf-8", "replace"),
        }
        msg_id = f"dead-{msg.metadata.sequence.stream}"
        await js.publish(f"{self.prefix}.dead.{rest}", json.dumps(body).encode(), headers={"Nats-Msg-Id": msg_id})
        await msg.ack()

    async def keep_alive(self, msg):
        # Half the ack wait: the server never gives the message to another agent meanwhile.
        while True:
            await asyncio.sleep(self.args.ack_wait / 2)
            await msg.in_progress()

    async def handle(self, js, msg):
        attempts = msg.metadata.num_delivered
        try:
            message = json.loads(msg.data)
            if message.get("v") != SCHEMA_VERSION or message.get("type") != "work.assignment":
                raise ValueError(f"not a version {SCHEMA_VERSION} work.assignment")
            assignment = message["payload"]
            task = assignment["task"]
        except (ValueError, KeyError, TypeError) as e:
            await self.dead_letter(js, msg, f"undecodable: {e}", attempts)
            return
        if attempts > self.args.max_deliver:
            await self.dead_letter(js, msg, f"delivered {attempts} times without success", attempts)
            return
        print(f"{self.node}: task {task['id']} (delivery {attempts})", file=sys.stderr, flush=True)
        self.in_flight += 1
        alive = asyncio.create_task(self.keep_alive(msg))
        try:
            await self.report(js, assignment, "started", {"state": "started"}, message["id"])
            step = assignment.get("step", {}).get("step", "work")
            if step != "work":
                failure = {"code": "step_unsupported", "message": f"{self.kind} has no `{step}` step"}
                outcome = {"state": "failed", "failure": failure}
            else:
                task_input = task.get("input") or {}
                delay = task_input.get("delay_ms", 0) if isinstance(task_input, dict) else 0
                await asyncio.sleep(delay / 1000)
                result = wordcount(task_input)
                result["served_by"] = self.node
                outcome = {"state": "completed", "result": result}
            await self.report(js, assignment, outcome["state"], outcome, message["id"])
            await msg.ack()
        finally:
            alive.cancel()
            self.in_flight -= 1

    async def heartbeats(self, nc):
        while not self.stopping.is_set():
            payload = {"node": self.node, "agents": [self.kind], "in_flight": self.in_flight, "at": now()}
            await nc.publish(f"{self.prefix}.health.{self.node}", envelope(self.node, "node.heartbeat", payload))
            try:
                await asyncio.wait_for(self.stopping.wait(), 5)
            except asyncio.TimeoutError:
                pass

    async def run(self):
        nc = await nats.connect(self.args.nats, name=f"orion-agent-{self.node}")
        js = nc.jetstream()
        durable = f"agents-{self.kind}"
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.args.ack_wait,
            max_deliver=-1,
            filter_subject=f"{self.prefix}.work.{self.kind}.*",
        )
        sub = await js.pull_subscribe(f"{self.prefix}.work.{self.kind}.*", durable=durable, config=config)
        beats = asyncio.create_task(self.heartbeats(nc))
        print(f"{self.node}: serving {self.kind} on {self.prefix}.work.{self.kind}.*", flush=True)
        while not self.stopping.is_set():
            try:
                messages = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in messages:
                await self.handle(js, msg)
        beats.cancel()
        await nc.drain()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--prefix", default="orion")
    parser.add_argument("--kind", default="wordcount")
    parser.add_argument("--node", default=f"py-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--ack-wait", type=float, default=30.0, help="seconds before an unacknowledged assignment is redelivered")
    parser.add_argument("--max-deliver", type=int, default=5, help="deliveries before an assignment is dead-lettered")
    agent = Agent(parser.parse_args())
    loop = asyncio.new_event_loop()
    # SIGTERM: finish the assignment in hand, take no more, and leave.
    loop.add_signal_handler(signal.SIGTERM, agent.stopping.set)
    loop.run_until_complete(agent.run())


if __name__ == "__main__":
    main()
