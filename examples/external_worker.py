"""A Courier worker outside Courier: marks each new order shipped, exactly once (docs/workers.md,
"External workers"). Env: COURIER_NATS_URL, COURIER_NATS_PASSWORD_FILE (user courier-external),
COURIER_API_URL, COURIER_TASK_KIND (orders.ship), COURIER_TOKEN (optional bearer token)."""
import asyncio, json, os, urllib.error, urllib.request
import nats
from nats.errors import TimeoutError

def write(task):  # the task's one effect, through the api; If-Match turns a repeat into a 412
    url = f"{os.environ['COURIER_API_URL']}/api/v1/{task['collection']}/{task['doc_id']}"
    headers = {"Content-Type": "application/json", "If-Match": f'"{task["doc_version"]}"'}
    if os.environ.get("COURIER_TOKEN"): headers["Authorization"] = "Bearer " + os.environ["COURIER_TOKEN"]
    try: urllib.request.urlopen(urllib.request.Request(url, b'{"note": "shipped"}', headers, method="PATCH"), timeout=10)
    except urllib.error.HTTPError as err:
        if err.code != 412: raise  # 412: the document moved on since this task's version: done

async def main():
    kind, user = os.environ.get("COURIER_TASK_KIND", "orders.ship"), "courier-external"
    password = open(os.environ["COURIER_NATS_PASSWORD_FILE"]).read().strip()
    nc = await nats.connect(os.environ["COURIER_NATS_URL"], user=user, password=password, inbox_prefix="_INBOX." + user)
    js, consumer = nc.jetstream(), "external-" + kind.replace(".", "-")
    max_deliver = int((await js.consumer_info("TASKS", consumer)).config.metadata["courier_max_deliver"])
    tasks = await js.pull_subscribe_bind(consumer, stream="TASKS")
    while True:
        try: [msg] = await tasks.fetch(1, timeout=5)
        except TimeoutError: continue
        n, task = msg.metadata.num_delivered, {}
        try:
            if n > max_deliver: raise RuntimeError(f"no attempt completed in {n - 1} deliveries")
            task = json.loads(msg.data)
            await asyncio.to_thread(write, task)
            await msg.ack_sync()  # after the write: a crash before this ack means a redelivery
        except Exception as err:
            if n < max_deliver: await msg.nak(delay=min(2 ** n, 60)); continue
            headers = {"Courier-Dead-Reason": str(err)[:1024], "Courier-Attempts": str(min(n, max_deliver)),
                "Courier-Task-Id": str(task.get("id", "")) if isinstance(task, dict) else "",
                "Courier-Worker": f"python-{os.getpid()}", "Nats-Msg-Id": f"dead-tasks-{msg.metadata.sequence.stream}"}
            try: await js.publish("dlq." + msg.subject, msg.data, headers=headers)  # the built-in workers' DLQ
            except Exception: await msg.nak(delay=60); continue  # not stored: the task stays queued
            await msg.term()

asyncio.run(main())
