#!/usr/bin/env python3
"""Writes Courier's Grafana dashboards (overview, realtime, workers, api, chat, web app) as JSON next to this file.

The JSON files are what the Helm chart ships (ConfigMaps labelled grafana_dashboard: "1"); this
script is their source, so every panel shares one selector, one datasource variable and one
layout. The observability proof test (tests/e2e/observability.rs) runs every panel query against a
real Prometheus and fails when a JSON file differs from what this script writes.

    python3 charts/courier/dashboards/generate.py          # rewrite the JSON files
    python3 charts/courier/dashboards/generate.py --check  # exit 1 if they are stale
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Every query is scoped to the chosen namespace(s) and pod(s). On Kubernetes those labels come
# from the scrape (ServiceMonitor / pod annotations); ./dev up --with-prometheus adds them too.
SEL = 'namespace=~"$namespace", pod=~"$pod"'
RATE = "$__rate_interval"
# HTTP panels leave out probes and scrapes: they are not user traffic and would dilute ratios.
NOT_OPS = 'route!~"/healthz|/readyz|/metrics"'


def selector(metric, extra):
    parts = [SEL] + ([NOT_OPS] if metric.startswith("courier_http_") else []) + ([extra] if extra else [])
    return ", ".join(parts)


def rate(metric, extra="", by=None):
    labels = selector(metric, extra)
    inner = f"rate({metric}{{{labels}}}[{RATE}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, bucket_metric, by=None, extra=""):
    group = f"{by}, le" if by else "le"
    labels = selector(bucket_metric, extra)
    return f"histogram_quantile({q}, sum by ({group}) (rate({bucket_metric}{{{labels}}}[{RATE}])))"


def ratio_or_zero(errors, total):
    """errors / total, 0 (not "no data") while there are requests and no errors."""
    return f"({errors} or {total} * 0) / {total}"


class Dashboard:
    def __init__(self, uid, title, description):
        self.uid, self.title, self.description = uid, title, description
        self.panels = []
        self.x = self.y = 0
        self.row_height = 0

    def _place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [], "id": len(self.panels) + 1,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}})
        self.y += 1

    def panel(self, kind, title, targets, unit, description, w=12, h=8, stacked=False, thresholds=None):
        defaults = {"unit": unit}
        if kind == "timeseries":
            defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                                  "stacking": {"mode": "normal" if stacked else "none", "group": "A"}}
            options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                       "tooltip": {"mode": "multi", "sort": "desc"}}
        else:
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "colorMode": "value", "graphMode": "area", "textMode": "auto", "justifyMode": "auto",
                       "orientation": "auto"}
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]}
        self.panels.append({
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options,
            "targets": [
                {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                 "datasource": {"type": "prometheus", "uid": "${datasource}"}, "range": True, "instant": False}
                for i, (expr, legend) in enumerate(targets)
            ],
        })

    def timeseries(self, title, targets, unit, description, **kw):
        self.panel("timeseries", title, targets, unit, description, **kw)

    def stat(self, title, targets, unit, description, w=6, h=4, thresholds=None):
        self.panel("stat", title, targets, unit, description, w=w, h=h, thresholds=thresholds)

    def to_json(self):
        variable = lambda name, label, query, multi: {  # noqa: E731
            "name": name, "label": label, "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
            "refresh": 2, "sort": 1, "multi": multi, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0,
        }
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["courier"],
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "time": {"from": "now-1h", "to": "now"},
            "refresh": "30s",
            "timezone": "browser",
            "links": [{"type": "dashboards", "tags": ["courier"], "asDropdown": True, "title": "Courier", "includeVars": True, "keepTime": True}],
            "annotations": {"list": []},
            "templating": {"list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                 "current": {}, "hide": 0, "refresh": 1, "options": []},
                variable("namespace", "Namespace", "label_values(courier_build_info, namespace)", True),
                variable("pod", "Pod", 'label_values(courier_build_info{namespace=~"$namespace"}, pod)', True),
            ]},
            "panels": self.panels,
        }


def overview():
    d = Dashboard("courier-overview", "Courier / Overview",
                  "RED per service, connections, events, end-to-end lag, backlogs and dead letters.")
    d.row("Health")
    d.stat("Pods", [(f"count by (component) (courier_build_info{{{SEL}}})", "{{component}}")], "none",
           "Courier processes exporting metrics, by component.")
    d.stat("Open WebSocket connections", [(f"sum(courier_ws_connections{{{SEL}}})", "connections")], "none",
           "Clients connected to all broadcasters.")
    d.stat("Dead letters", [(f'max(courier_jetstream_stream_messages{{{SEL}, stream="DLQ"}})', "DLQ")], "none",
           "Tasks in the DLQ stream waiting for inspection or retry. Anything above 0 needs a look.",
           thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])
    d.stat("Outbox oldest record", [(f"max(courier_outbox_oldest_age_seconds{{{SEL}}})", "oldest")], "s",
           "Age of the oldest change not yet published to JetStream (0 when the outbox is empty).",
           thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 10}, {"color": "red", "value": 60}])
    d.row("Rate, errors, duration")
    d.timeseries("Requests by component", [(rate("courier_http_requests_total", by="component"), "{{component}}")], "reqps",
                 "HTTP requests per second answered by each component.", w=8)
    d.timeseries("Server error ratio by component",
                 [(ratio_or_zero(rate("courier_http_requests_total", 'status=~"5.."', by="component"),
                                 rate("courier_http_requests_total", by="component")), "{{component}}")],
                 "percentunit", "Share of requests answered 5xx.", w=8)
    d.timeseries("p99 request latency by component",
                 [(quantile(0.99, "courier_http_request_duration_seconds_bucket", by="component"), "{{component}}")], "s",
                 "99th percentile time to the response head.", w=8)
    d.row("Events")
    d.timeseries("Events", [(rate("courier_events_published_total"), "published (api outbox)"),
                            (rate("courier_broadcaster_events_received_total"), "received (broadcasters)"),
                            (rate("courier_ws_frames_sent_total"), "frames to clients")], "ops",
                 "Events acknowledged by JetStream, read by broadcasters, and frames written to clients, per second.", w=12)
    d.timeseries("End-to-end delivery lag", [(quantile(q, "courier_ws_delivery_lag_seconds_bucket"), f"p{int(q * 100)}") for q in (0.5, 0.99)],
                 "s", "Commit → frame written to the client, live deliveries.", w=12)
    d.row("Backlogs")
    d.timeseries("Outbox backlog", [(f"max(courier_outbox_pending{{{SEL}}})", "waiting records")], "none",
                 "Outbox records waiting for the relay (should stay near 0).", w=8)
    d.timeseries("Task backlog", [(f"max by (consumer) (courier_jetstream_consumer_pending{{{SEL}, stream=\"TASKS\"}})", "pending {{consumer}}"),
                                  (f"max by (consumer) (courier_jetstream_consumer_ack_pending{{{SEL}, stream=\"TASKS\"}})", "in flight {{consumer}}")],
                 "none", "Tasks not yet delivered, and delivered but not acknowledged.", w=8)
    d.timeseries("Dead letters over time", [(f'max(courier_jetstream_stream_messages{{{SEL}, stream="DLQ"}})', "DLQ")], "none",
                 "Messages in the DLQ stream.", w=8)
    return d


def realtime():
    d = Dashboard("courier-realtime", "Courier / Realtime",
                  "The broadcasters: connections, subscriptions, fan-out, delivery lag, disconnect reasons.")
    d.row("Connections")
    d.timeseries("Open connections by pod", [(f"sum by (pod) (courier_ws_connections{{{SEL}}})", "{{pod}}")], "none",
                 "WebSocket connections open on each broadcaster.", w=8)
    d.timeseries("Connects", [(rate("courier_ws_connects_total"), "accepted")], "ops",
                 "WebSocket connections accepted per second.", w=8)
    d.timeseries("Disconnects by reason", [(rate("courier_ws_disconnects_total", by="reason"), "{{reason}}")], "ops",
                 "Connections closed per second: client_closed, server_shutdown, slow_consumer, idle_timeout, protocol_error, …",
                 w=8, stacked=True)
    d.row("Subscriptions and fan-out")
    d.timeseries("Subscriptions by channel kind", [(f"sum by (kind) (courier_ws_subscriptions{{{SEL}}})", "{{kind}}")], "none",
                 "Active subscriptions: whole collections, single documents, chat rooms.", w=8, stacked=True)
    d.timeseries("Fan-out", [(rate("courier_broadcaster_events_received_total"), "events in"),
                             (rate("courier_broadcaster_channel_fanouts_total"), "channel frames"),
                             (rate("courier_ws_frames_sent_total"), "frames out")], "ops",
                 "Events read from EVENTS, frames built per channel, frames written to sockets.", w=8)
    d.timeseries("Replays and refused subscribes", [(rate("courier_ws_replays_total"), "since-replays"),
                                                    (rate("courier_ws_unauthorized_subscribes_total"), "unauthorized")], "ops",
                 "Subscriptions served with a replay (clients resuming), and subscribes refused for a bad token.", w=8)
    d.row("Lag and slow clients")
    d.timeseries("Delivery lag percentiles", [(quantile(q, "courier_ws_delivery_lag_seconds_bucket"), f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)],
                 "s", "Commit → frame written, live deliveries.", w=12)
    d.timeseries("Slow consumers and dropped frames", [(rate("courier_ws_slow_consumer_disconnects_total"), "slow-consumer disconnects"),
                                                       (rate("courier_ws_frames_dropped_total"), "frames dropped")], "ops",
                 "Clients cut off (close 4008) for falling a whole ring behind, and the frames they missed.", w=12)
    return d


def workers():
    d = Dashboard("courier-workers", "Courier / Workers",
                  "The task queue: throughput, failures, retries, dead letters, duration, backlog, by kind and by priority.")
    d.row("Throughput")
    d.timeseries("Tasks completed by kind", [(rate("courier_tasks_processed_total", by="kind"), "{{kind}}")], "ops",
                 "Tasks acknowledged per second.", w=8, stacked=True)
    d.timeseries("Failures and retries by kind", [(rate("courier_tasks_failed_total", by="kind"), "failed {{kind}}"),
                                                  (rate("courier_tasks_retried_total", by="kind"), "retried {{kind}}")], "ops",
                 "Attempts that failed, and those scheduled again with backoff.", w=8)
    d.timeseries("Dead-lettered by kind", [(rate("courier_tasks_dead_lettered_total", by="kind"), "{{kind}}")], "ops",
                 "Tasks moved to the DLQ per second.", w=8)
    d.row("Priorities")
    d.timeseries("Tasks completed by priority", [(rate("courier_tasks_processed_total", by="priority"), "{{priority}}")], "ops",
                 "Tasks acknowledged per second, by the line they came from. Workers take high before normal before low, "
                 "with at least one start in ten for normal and for low while they have work (docs/workers.md).", w=8, stacked=True)
    d.timeseries("Waiting by priority", [(f'max by (priority) (courier_jetstream_tasks_pending{{{SEL}}})', "pending {{priority}}"),
                                         (f'max by (priority) (courier_jetstream_tasks_in_flight{{{SEL}}})', "in flight {{priority}}")],
                 "none", "Tasks not yet delivered, and delivered but not acknowledged, per priority (polled by the api).", w=8)
    d.timeseries("Oldest waiting task by priority", [(f'max by (priority) (courier_jetstream_task_oldest_pending_age_seconds{{{SEL}}})', "{{priority}}")],
                 "s", "How long the oldest task not yet delivered has waited. CourierHighPriorityTasksWaiting fires when high passes 30 s.", w=8)
    d.timeseries("Wait before start (p99) by priority", [(quantile(0.99, "courier_task_wait_seconds_bucket", by="priority"), "p99 {{priority}}"),
                                                         (quantile(0.5, "courier_task_wait_seconds_bucket", by="priority"), "p50 {{priority}}")],
                 "s", "From enqueue (a scheduled task: its release) to the start of its first delivery.", w=12)
    d.timeseries("Scheduled tasks", [(f"max(courier_scheduled_tasks{{{SEL}}})", "waiting for their time"),
                                     (rate("courier_scheduled_tasks_released_total"), "released per second")], "none",
                 "Tasks held back by not_before in _scheduled_tasks, and those the api's scheduler moved into the outbox when due.", w=12)
    d.row("Duration and concurrency")
    d.timeseries("Task duration", [(quantile(q, "courier_task_duration_seconds_bucket", by="kind"), f"p{int(q * 100)} {{{{kind}}}}") for q in (0.5, 0.99)],
                 "s", "Handler time per task.", w=12)
    d.timeseries("In flight by pod", [(f"sum by (pod) (courier_tasks_in_flight{{{SEL}}})", "{{pod}}")], "none",
                 "Tasks being processed now on each worker.", w=12)
    d.row("Queue")
    d.timeseries("Backlog", [(f'max by (consumer) (courier_jetstream_consumer_pending{{{SEL}, stream="TASKS"}})', "pending {{consumer}}"),
                             (f'max by (consumer) (courier_jetstream_consumer_ack_pending{{{SEL}, stream="TASKS"}})', "in flight {{consumer}}"),
                             (f'max by (consumer) (courier_jetstream_consumer_redelivered{{{SEL}, stream="TASKS"}})', "redelivered {{consumer}}")],
                 "none", "The workers-<priority> consumers: the operator's autoscaler scales on their sum.", w=8)
    d.timeseries("Oldest queued task", [(f'max(courier_jetstream_stream_oldest_age_seconds{{{SEL}, stream="TASKS"}})', "oldest")], "s",
                 "Age of the oldest task still in the TASKS work queue, any priority, in flight included.", w=8)
    d.timeseries("Dead letters stored", [(f'max(courier_jetstream_stream_messages{{{SEL}, stream="DLQ"}})', "DLQ")], "none",
                 "Messages in the DLQ stream (retry them with POST /api/v1/queues/tasks/dead/<id>/retry).", w=8)
    d.row("Webhooks")
    d.timeseries("Webhook requests by outcome", [(rate("courier_webhook_deliveries_total", by="outcome"), "{{outcome}}")], "reqps",
                 "Signed POSTs of webhook tasks per second: delivered (2xx), refused (other 4xx/3xx: dead letter), and the retried "
                 "server_error, throttled, timeout, connection_error, refused_address, no_secret (docs/workers.md).", w=8, stacked=True)
    d.timeseries("Webhook failing share by endpoint host",
                 [(ratio_or_zero(rate("courier_webhook_deliveries_total", 'outcome!="delivered"', by="host"),
                                 rate("courier_webhook_deliveries_total", by="host")), "{{host}}")], "percentunit",
                 "Requests not answered 2xx, per endpoint host (hosts come from collections.yaml). "
                 "CourierWebhookEndpointFailing fires when an endpoint has had no success for 5 minutes.", w=8)
    d.timeseries("Webhook latency by endpoint host (p99)", [(quantile(0.99, "courier_webhook_delivery_seconds_bucket", by="host"), "{{host}}")],
                 "s", "Request to answer (or failure), per endpoint host.", w=8)
    return d


def api():
    d = Dashboard("courier-api", "Courier / API", "The REST api: routes, latency, errors, the outbox and JetStream.")
    d.row("Routes")
    d.timeseries("Requests by route", [(rate("courier_http_requests_total", 'component="api"', by="method, route"), "{{method}} {{route}}")],
                 "reqps", "Requests per second by route template.", w=12, stacked=True)
    d.timeseries("Latency by route (p99)", [(quantile(0.99, "courier_http_request_duration_seconds_bucket", by="method, route", extra='component="api"'),
                                             "{{method}} {{route}}")], "s", "99th percentile time to the response head.", w=12)
    d.timeseries("Latency (all routes)", [(quantile(q, "courier_http_request_duration_seconds_bucket", extra='component="api"'), f"p{int(q * 100)}")
                                          for q in (0.5, 0.95, 0.99)], "s", "Percentiles across every route.", w=8)
    d.timeseries("Client and server errors", [(rate("courier_http_requests_total", 'component="api", status=~"4..|5.."', by="status"), "{{status}}")],
                 "reqps", "Responses 4xx (bad input, auth, conflicts) and 5xx (store or NATS trouble) per second.", w=8, stacked=True)
    d.timeseries("In-flight requests", [(f'sum by (pod) (courier_http_requests_in_flight{{{SEL}, component="api"}})', "{{pod}}")], "none",
                 "Requests being handled now.", w=8)
    d.row("Outbox")
    d.timeseries("Outbox publishing", [(rate("courier_events_published_total"), "published"),
                                       (rate("courier_outbox_publish_failures_total"), "publish failures"),
                                       (rate("courier_outbox_relay_republished_total"), "relay republished")], "ops",
                 "Events acknowledged by JetStream; failed fast-path publishes left to the relay; events the relay published.", w=12)
    d.timeseries("Outbox waiting records", [(f"max(courier_outbox_pending{{{SEL}}})", "waiting")], "none",
                 "Records waiting for the relay at its last round.", w=6)
    d.timeseries("Outbox oldest record", [(f"max(courier_outbox_oldest_age_seconds{{{SEL}}})", "oldest")], "s",
                 "Age of the oldest waiting record (0 when empty).", w=6)
    d.row("JetStream")
    d.timeseries("Stream messages", [(f"max by (stream) (courier_jetstream_stream_messages{{{SEL}}})", "{{stream}}")], "none",
                 "Messages stored per stream (polled by the api).", w=8)
    d.timeseries("Stream size", [(f"max by (stream) (courier_jetstream_stream_bytes{{{SEL}}})", "{{stream}}")], "bytes",
                 "Bytes stored per stream.", w=8)
    d.stat("JetStream reachable", [(f"min(courier_jetstream_up{{{SEL}}})", "up")], "bool",
           "1 when the api's last JetStream poll succeeded.", w=8, h=8,
           thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}])
    return d


def chat():
    d = Dashboard("courier-chat", "Courier / Chat",
                  "Chat rooms live on the broadcasters: subscriptions, membership checks and cut-offs, typing, presence, "
                  "message delivery lag. The busiest rooms are not a metric label (unbounded): GET /chat/top-rooms on a "
                  "broadcaster lists its top 10.")
    d.row("Rooms")
    d.stat("Chat subscriptions", [(f"sum(courier_chat_subscriptions{{{SEL}}})", "subscriptions")], "none",
           "Open chat:<room> subscriptions over all broadcasters (one per connection and room).")
    d.stat("Present users", [(f"sum(courier_chat_presence_users{{{SEL}}})", "users")], "none",
           "Users present in rooms, counted per broadcaster they are connected to (two tabs on one broadcaster are one).")
    d.stat("Rooms followed", [(f"sum(courier_chat_rooms{{{SEL}}})", "rooms")], "none",
           "Rooms with a subscriber, summed over broadcasters (a room with members on two broadcasters counts twice).")
    d.stat("Membership cut-offs (1h)", [(f"sum(increase(courier_chat_revocations_total{{{SEL}}}[1h]))", "cut off")], "none",
           "Subscriptions ended because their member was removed from the room.")
    d.timeseries("Chat subscriptions by pod", [(f"sum by (pod) (courier_chat_subscriptions{{{SEL}}})", "{{pod}}")], "none",
                 "Chat subscriptions open on each broadcaster.", w=12)
    d.timeseries("Present users by pod", [(f"sum by (pod) (courier_chat_presence_users{{{SEL}}})", "{{pod}}")], "none",
                 "Users present through each broadcaster, summed over its rooms.", w=12)
    d.row("Membership")
    d.timeseries("Membership checks by outcome", [(rate("courier_chat_membership_checks_total", by="outcome"), "{{outcome}}")], "ops",
                 "rpc.chat.membership requests for chat subscribes: member, not_member, unavailable (no api answer in 2 s: refused).",
                 w=12, stacked=True)
    d.timeseries("Cache hits and cut-offs", [(rate("courier_chat_membership_cache_hits_total"), "admitted from the cache"),
                                             (rate("courier_chat_revocations_total"), "cut off (member removed)")], "ops",
                 "Subscribes admitted without asking the api (the user already had one on that broadcaster), and subscriptions "
                 "ended by chat.member_removed.", w=12)
    d.row("Typing and rate limits")
    d.timeseries("Typing frames", [(rate("courier_chat_typing_frames_total"), "accepted")], "ops",
                 "typing frames accepted from clients (each refreshes the indicator on every broadcaster).", w=12)
    d.timeseries("Rate-limited chat actions", [(rate("courier_chat_rate_limited_total", by="action"), "{{action}}")], "ops",
                 "Chat actions refused for their rate limit, by action (typing on the broadcasters; the api's own actions too).",
                 w=12, stacked=True)
    d.row("Delivery")
    d.timeseries("Chat message delivery lag", [(quantile(q, "courier_chat_delivery_lag_seconds_bucket"), f"p{int(q * 100)}")
                                               for q in (0.5, 0.9, 0.99)], "s",
                 "chat.message commit → frame written to a member's socket, live deliveries.", w=12)
    d.timeseries("Chat messages delivered", [(rate("courier_chat_delivery_lag_seconds_count"), "frames to members")], "ops",
                 "chat.message frames written to members' sockets per second.", w=12)
    return d


def webapp():
    d = Dashboard("courier-webapp", "Courier / Web app",
                  "The web app as the browser sees it (reported by the pages to POST /api/v1/telemetry/web): api calls, "
                  "their errors and durations, the WebSocket's failures and outages, uncaught errors. The servers' own "
                  "view is on the API and Realtime dashboards.")
    d.row("Requests from the browser")
    d.timeseries("Browser api calls by route", [(rate("courier_web_api_requests_total", by="method, route"), "{{method}} {{route}}")],
                 "reqps", "api calls the pages made, by OpenAPI route template (other: paths the api does not serve).", w=12, stacked=True)
    d.timeseries("Browser error rate", [(ratio_or_zero(rate("courier_web_api_requests_total", 'status_class=~"5xx|network"'),
                                                       rate("courier_web_api_requests_total")), "5xx or no answer")],
                 "percentunit", "Share of the pages' api calls that failed on the server (5xx) or never got an answer (network: a "
                 "proxy, DNS, or the api down as seen from the browser).", w=6)
    d.timeseries("Browser request duration", [(quantile(q, "courier_web_api_request_duration_seconds_bucket"), f"p{int(q * 100)}")
                                              for q in (0.5, 0.95, 0.99)], "s",
                 "api call durations measured in the browser: the server's time plus the network's.", w=6)
    d.row("WebSocket from the browser")
    d.timeseries("WebSocket connects and failures", [(rate("courier_web_ws_events_total", by="event"), "{{event}}")], "ops",
                 "connect: opened; failure: could not connect or dropped (a blocked port, a proxy, a wrong COURIER_PUBLIC_WS_URL); "
                 "reconnect: open again after a failure; unrecovered_resume: a resume whose history was gone (the page reloaded its state).",
                 w=12, stacked=True)
    d.timeseries("WebSocket failure share", [(ratio_or_zero(rate("courier_web_ws_events_total", 'event="failure"'),
                                                            rate("courier_web_ws_events_total", 'event=~"failure|connect"')), "failures")],
                 "percentunit", "Failures among connection attempts (the CourierWebSocketBrowserFailures alert).", w=6)
    d.timeseries("Time disconnected", [(rate("courier_web_ws_disconnected_seconds_total"), "disconnected")], "s",
                 "Seconds per second that pages spent without their WebSocket (1 = one page offline all the time).", w=6)
    d.row("Errors and reports")
    d.timeseries("Uncaught errors by kind", [(rate("courier_web_errors_total", by="kind"), "{{kind}}")], "ops",
                 "Uncaught errors and unhandled rejections in the pages, by kind (never their text).", w=12, stacked=True)
    d.timeseries("Telemetry reports", [(rate("courier_web_telemetry_reports_total", by="outcome"), "{{outcome}}")], "ops",
                 "Reports received: accepted, invalid (refused with 4xx), limited (over the per-address limit).", w=12)
    return d


def render():
    return {f"courier-{d.uid.split('-', 1)[1]}.json": json.dumps(d.to_json(), indent=2) + "\n"
            for d in (overview(), realtime(), workers(), api(), chat(), webapp())}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, text in render().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards: {', '.join(stale)}; run python3 {Path(__file__).relative_to(Path.cwd()) if Path.cwd() in Path(__file__).parents else __file__}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
