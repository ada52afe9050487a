"""
Outputter for ``salt-run cluster.history``: one line per record, newest first.
``--out=json`` / ``--out=yaml`` give the records instead.
"""

import time


def line(record):
    """One record as text (pure)."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record["at"]))
    kind = record["kind"]
    if kind == "repair":
        what = f"{record['fault']} on {record['node']}: {'repaired' if record['ok'] else 'REPAIR FAILED'} ({record['found']})"
    elif kind == "refused":
        what = f"{record['fault'] or 'no fault'} about {record['node']} from {record['sender']}: {record['reason']}"
    elif kind == "needs_human":
        what = f"{record['fault']} on {record['node']}: {record['failures']} failed repairs, left to a human"
    elif kind == "vip":
        what = f"VIP held by {', '.join(record['holders']) or 'NOBODY'} (before: {', '.join(record['previous']) or '-'})"
    elif kind == "retired":
        what = f"{record['node']} taken out by {record['by']}: no repair or rebuild until deleted from the description"
    else:
        what = str({k: v for k, v in record.items() if k not in ("at", "kind")})
    return f"{at} UTC  {kind:11} {what}"


def output(data, **kwargs):  # pylint: disable=unused-argument
    if not isinstance(data, list):
        return str(data)
    return "\n".join(line(r) for r in data) if data else "no record yet"
