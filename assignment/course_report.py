"""What `python build.py grade` writes beside its CSV for the course staff, from the rows of that CSV
and the grader's per-check verdicts:

- the gradebook (`gradebook`): one row per student, a group submission's marks on each member's row, in
  the columns a gradebook import maps (Gradescope's and Moodle's by email or student id); an error is
  no mark (an empty score, its status and reason), never a 0;
- the course report (`report_html`): per part and per check how many passed, the failure messages
  students met most, the time limits and errors, and the test MAEs against 4b's tiers.

Every text that reaches these files from a submission (names, ids, file names, the messages, which
quote values the submission computed) is hostile input: the report escapes all of it, allows no
script, and links nothing.
"""

from __future__ import annotations

import base64
import html
import io
import re
import statistics
from collections import Counter

from cgcnn_grading.settings import MAE_TIERS

GRADEBOOK_COLUMNS = ["name", "email", "sid", "score", "possible", "status", "reason", "submission"]
TOP_MESSAGES = 3  # the most common failure messages shown per check
MESSAGE_CHARS = 240  # a message is cut here in the report
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def gradebook(rows: list[dict], people: dict[str, list[tuple[str, str, str]]], possible: float) -> list[dict]:
    """One row per student: each member (name, email, sid) of each submission's `people` gets the
    submission's total as `score`, or an empty score where its status is "error". A submission
    without members (a folder not in Gradescope's metadata) keeps one row with no name, for the staff
    to resolve."""
    out = []
    for row in rows:
        score = "" if row["status"] == "error" else f"{row['total']:g}"
        for name, email, sid in people.get(row["submission"]) or [("", "", "")]:
            out.append({"name": name, "email": email, "sid": sid, "score": score, "possible": f"{possible:g}",
                        "status": row["status"], "reason": row.get("reason", "") if row["status"] != "graded" else "",
                        "submission": row["submission"]})
    return out


def shared_identities(book: list[dict]) -> list[str]:
    """Emails or student ids that stand on more than one row: a gradebook import would take one of them."""
    seen = Counter(value for row in book for value in {row["email"], row["sid"]} if value)
    return sorted(value for value, count in seen.items() if count > 1)


def message_kind(message: str) -> str:
    """A failure message with its numbers as '#', cut to MESSAGE_CHARS: the same mistake with other
    values counts as one kind."""
    text = " ".join(str(message).split())
    text = NUMBER.sub("#", text)
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"


def verdict(text: str) -> str:
    """"passed", "failed" or "not checked" (the grader's verdict strings start with them)."""
    text = str(text)
    for kind in ("passed", "failed", "not checked"):
        if text.startswith(kind):
            return kind
    return "failed"


def report_html(rows: list[dict], checks: dict[str, dict], points: dict[str, float], mae_full: float | None) -> str:
    """The course report as one HTML page: `rows` as grade_folder makes them (raw numbers),
    `checks` {submission: results.json's extra_data["tests"], {part: {check: verdict}}}."""
    e = html.escape
    counted = [r for r in rows if r["status"] != "error"]  # an error is no mark: left out of the rates
    possible = sum(points.values())
    statuses = Counter(r["status"] for r in rows)
    out = [f"<h1>Course report: {len(rows)} submissions</h1>",
           "<p>" + e(", ".join(f"{statuses[s]} {s}" for s in ("graded", "time limit", "error"))) + ". Rates and means "
           f"are over the {len(counted)} submissions with marks (graded or stopped by a time limit); an error has "
           "no mark.</p>"]
    if counted:
        totals = sorted(r["total"] for r in counted)
        out.append(f"<p>Total: mean {statistics.mean(totals):.1f}, median {statistics.median(totals):g} of "
                   f"{possible:g}; {sum(t == possible for t in totals)} with full marks.</p>")

    out.append("<h2>Parts</h2><table><tr><th>part</th><th>points</th><th>mean</th><th>full marks</th>"
               "<th>none</th></tr>")
    for part, worth in points.items():
        got = [r.get(part, 0.0) for r in counted]
        mean = sum(got) / len(got) if got else 0.0
        out.append(f"<tr><td>{e(part)}</td><td>{worth:g}</td><td>{mean:.2f}</td>"
                   f"<td>{_share(sum(g == worth for g in got), len(got))}</td>"
                   f"<td>{_share(sum(g == 0 for g in got), len(got))}</td></tr>")
    out.append("</table>")

    out.append("<h2>Checks</h2><p>Every check of every part, public and hidden, with the failure messages met "
               f"most (numbers shown as #; at most {TOP_MESSAGES} per check).</p><table><tr><th>part</th>"
               "<th>check</th><th>passed</th><th>failed</th><th>not checked</th><th>most common failures</th></tr>")
    table: dict[tuple[str, str], list[str]] = {}
    for row in counted:
        for part, tests in (checks.get(row["submission"]) or {}).items():
            if isinstance(tests, dict):
                for check, said in tests.items():
                    table.setdefault((str(part), str(check)), []).append(str(said))
    order = {part: k for k, part in enumerate(points)}
    for part, check in sorted(table, key=lambda key: (order.get(key[0], len(order)), key[0])):
        said = table[part, check]
        kinds = Counter(verdict(s) for s in said)
        failures = Counter(message_kind(s.partition(":")[2]) for s in said if verdict(s) == "failed")
        common = "".join(f"<li>{count} &times; <code>{e(kind)}</code></li>"
                         for kind, count in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_MESSAGES])
        out.append(f"<tr><td>{e(part)}</td><td>{e(check)}</td><td>{_share(kinds['passed'], len(said))}</td>"
                   f"<td>{kinds['failed']}</td><td>{kinds['not checked']}</td>"
                   f"<td>{'<ul>' + common + '</ul>' if common else ''}</td></tr>")
    out.append("</table>")

    stopped = Counter(message_kind(r.get("reason", "")) for r in rows if r["status"] != "graded")
    if stopped:
        out.append("<h2>Time limits and errors</h2><ul>" + "".join(
            f"<li>{count} &times; <code>{e(kind)}</code></li>"
            for kind, count in sorted(stopped.items(), key=lambda kv: (-kv[1], kv[0]))) + "</ul>")

    maes = [r["test_mae"] for r in counted if r.get("test_mae") is not None]
    out.append(f"<h2>Test MAE (part 4b)</h2><p>{len(maes)} of {len(counted)} submissions were scored on the "
               "held-out crystals.</p>")
    if maes and mae_full:
        factors = sorted(factor for _, factor, _ in MAE_TIERS)  # 4b's tiers, the tightest first
        edges = [factor * mae_full for factor in factors]
        earned = [sum(p for _, g, p in MAE_TIERS if factor <= g) for factor in factors] + [0]
        bands = ([f"up to {edges[0]:.3f} eV/atom"] + [f"{lo:.3f} to {hi:.3f}" for lo, hi in zip(edges, edges[1:])]
                 + [f"above {edges[-1]:.3f}"])
        bounds = [0.0, *edges, float("inf")]
        counts = [sum(lo < m <= hi for m in maes) for lo, hi in zip(bounds, bounds[1:])]
        out.append("<table><tr><th>test MAE</th><th>points of 4b's tiers</th><th>submissions</th></tr>" + "".join(
            f"<tr><td>{e(band)}</td><td>{points_}</td><td>{count}</td></tr>"
            for band, points_, count in zip(bands, earned, counts)) + "</table>")
        out.append(_histogram(maes, edges))
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:.2em .5em;text-align:left;vertical-align:top}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\"><title>Course report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def _share(count: int, of: int) -> str:
    return f"{count} ({100 * count / of:.0f} %)" if of else "0"


def _histogram(maes: list[float], edges: list[float]) -> str:
    """The test MAEs on a log axis with the tiers' edges marked, as an <img> with its alt text."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    low, high = min(min(maes), edges[0]) / 1.2, max(max(maes), edges[-1]) * 1.2
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(maes, bins=np.geomspace(low, high, 30), color="0.35")
    for edge, style in zip(edges, ("-", "--", ":")):
        ax.axvline(edge, color="black", linestyle=style, linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("test MAE (eV/atom); lines: 4b's tiers")
    ax.set_ylabel("submissions")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    alt = (f"Histogram of {len(maes)} test MAEs from {min(maes):.3f} to {max(maes):.3f} eV/atom; median "
           f"{sorted(maes)[len(maes) // 2]:.3f}; tier edges at " + ", ".join(f"{x:.3f}" for x in edges))
    return f"<img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{base64.b64encode(png.getvalue()).decode()}\">"
