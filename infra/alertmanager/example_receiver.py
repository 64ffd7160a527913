"""An example Alertmanager webhook receiver: prints one JSON line per alert of each notification
(status, name, severity, labels, summary, since), and answers 200. Standard library only, so it runs
in any Python image (docker-compose runs it in newswatch's).

Replace it with your own endpoint: infra/alertmanager/alertmanager.yml says how. The payload is
Alertmanager's webhook format, version 4:
https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self.send_error(413 if length else 411)
            return
        try:
            notification = json.loads(self.rfile.read(length))
            alerts = notification["alerts"]
        except (ValueError, KeyError, TypeError):
            self.send_error(400, "not an Alertmanager notification")
            return
        for alert in alerts:
            labels = alert.get("labels", {})
            line = {"status": alert.get("status"), "alertname": labels.get("alertname"),
                    "severity": labels.get("severity"), "labels": labels,
                    "summary": alert.get("annotations", {}).get("summary", ""), "startsAt": alert.get("startsAt"),
                    "receiver": notification.get("receiver")}
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # the alert lines are the log
        pass


def main() -> None:
    host, port = os.environ.get("RECEIVER_HOST", "0.0.0.0"), int(os.environ.get("RECEIVER_PORT", "9095"))
    server = ThreadingHTTPServer((host, port), Receiver)
    sys.stdout.write(json.dumps({"listening": f"{host}:{port}"}) + "\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
