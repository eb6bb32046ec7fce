"""Plain-text tables of a benchmark report, with ratios against the references of the same run."""

from __future__ import annotations

from typing import Any

# Columns of each group and the ratios printed after them: (label, numerator, denominator).
_GROUPS: dict[str, tuple[list[str], list[tuple[str, str, str]]]] = {
    "throughput": (
        ["mnemoq5", "gmqtt", "paho", "mosquitto C"],
        [("mnemoq5/gmqtt", "mnemoq5", "gmqtt"), ("mnemoq5/C", "mnemoq5", "mosquitto C")],
    ),
    "large payloads": (
        ["mnemoq5", "gmqtt", "mosquitto C"],
        [("mnemoq5/gmqtt", "mnemoq5", "gmqtt"), ("gmqtt/C", "gmqtt", "mosquitto C")],
    ),
    "latency": (["mnemoq5", "gmqtt"], [("mnemoq5/gmqtt", "mnemoq5", "gmqtt")]),
    "memory": (["mnemoq5"], []),
    "catch-up": (["mnemoq5 reload", "gmqtt", "mosquitto_sub"], []),
    "completeness": (["mnemoq5 reload"], []),
}


def _format_value(result: dict[str, Any] | None) -> str:
    if result is None:
        return ""
    if result["status"] == "skipped":
        return "skipped"
    if result["status"] == "error":
        return "error"
    value = result["value"]
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    received = result["details"].get("received")
    expected = result["details"].get("messages") or result["details"].get("topics")
    if received and expected and min(received) < expected:
        text += "*"
    return text


def _ratio(cells: dict[str, dict[str, Any]], numerator: str, denominator: str) -> str:
    top, bottom = cells.get(numerator), cells.get(denominator)
    if not top or not bottom or not top["value"] or not bottom["value"]:
        return ""
    return f"{top['value'] / bottom['value']:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """Return one table per benchmark group, followed by the skip and error reasons."""
    lines = [
        f"mnemoq5 benchmarks, {report['mode']} run, {report['date']}, {report['duration_s']} s",
        "machine: {cores} cores, {memory_gib} GiB, Python {python}, gmqtt {gmqtt}, paho-mqtt {paho-mqtt}, "
        "{mosquitto}".format(**report["machine"]),
    ]
    notes: list[str] = []
    lost = False
    for group, (columns, ratios) in _GROUPS.items():
        results = [result for result in report["results"] if result["group"] == group]
        if not results:
            continue
        unit = results[0]["unit"]
        scenarios = list(dict.fromkeys(result["scenario"] for result in results))
        header = [f"{group} ({unit})", *columns, *(label for label, _, _ in ratios)]
        rows = []
        for scenario in scenarios:
            cells = {result["implementation"]: result for result in results if result["scenario"] == scenario}
            row = [scenario, *(_format_value(cells.get(name)) for name in columns)]
            row += [_ratio(cells, numerator, denominator) for _, numerator, denominator in ratios]
            rows.append(row)
            for result in cells.values():
                if result["status"] != "ok" and result["reason"] not in notes:
                    notes.append(result["reason"])
                lost = lost or _format_value(result).endswith("*")
        widths = [max(len(str(row[index])) for row in [header, *rows]) for index in range(len(header))]
        lines.append("")
        for row in [header, *rows]:
            first = row[0].ljust(widths[0])
            rest = (str(cell).rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
            lines.append("  ".join([first, *rest]))
    if lost:
        lines.append("\n* some messages were lost: Mosquitto drops messages for a subscriber that falls behind "
                     "(max_queued_messages 1000 by default), at QoS 0 and 1; rates count received messages only")
    for note in notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
