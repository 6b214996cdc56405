#!/usr/bin/env python3
"""Parses a Prometheus scrape with the Python prometheus-client library's
OpenMetrics parser (strict: it rejects malformed text, a missing `# EOF`,
duplicate series) and prints its samples as JSON lines:
{"family": ..., "type": ..., "name": ..., "labels": {...}, "value": ...}.
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        print(json.dumps({
            "family": family.name,
            "type": family.type,
            "name": s.name,
            "labels": s.labels,
            "value": s.value,
        }))
