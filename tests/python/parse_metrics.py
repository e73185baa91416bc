"""Parses OpenMetrics text (stdin) with the Prometheus project's own Python parser and prints
its samples as JSON lines: {"name", "labels", "value"}. A document the parser refuses ends
the run with its error."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))
