"""Reading run directories in tests."""

import csv


def metric_rows(path):
    """metrics.csv as rows of strings (header first) without its wall-time column, for exact-resume comparisons."""
    with open(path) as fh:
        rows = list(csv.reader(fh))
    keep = [i for i, name in enumerate(rows[0]) if name != "seconds"]
    return [[row[i] for i in keep] for row in rows]
