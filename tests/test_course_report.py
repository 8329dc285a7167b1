"""What `python build.py grade` writes for the course staff beside its CSV (assignment/course_report.py):
the gradebook, one row per student for a gradebook import, and the course report. Built here from rows
and verdicts as grade_folder makes them; tests/test_bulk_grading.py checks both after a real grading."""

import csv
import math
import re

import build
import course_report

POINTS = {"q1a": 2, "q2a": 4, "q4b": 7}
POSSIBLE = sum(POINTS.values())


def row(submission, status="graded", mae=None, reason="", **marks):
    marks = {part: float(marks.get(part, 0)) for part in POINTS} if status != "error" else {}
    return {"submission": submission, **marks, "total": sum(marks.values()), "test_mae": mae, "status": status,
            "reason": reason}


ROWS = [row("submission_1", q1a=2, q2a=4, q4b=7, mae=0.05),
        row("submission_2", q1a=2, q2a=0, q4b=5, mae=0.10),
        row("submission_3", status="time limit", q1a=2, q2a=4, mae=None,
            reason="the cell starting 'model, val_pred = None, {}' was stopped after 240 s of CPU time (time limit)"),
        row("submission_4", status="error", reason="<b>no notebook</b> in the upload: it holds notes.txt"),
        row("alice.ipynb", q1a=2, q2a=0, mae=0.5)]
PEOPLE = {"submission_1": [("Ada Lovelace", "ada@uni.edu", "1001"), ("Alan Turing", "alan@uni.edu", "1002")],
          "submission_2": [("=HYPERLINK(\"http://evil\")", "eve@uni.edu", "1003")],
          "submission_3": [("Grace Hopper", "grace@uni.edu", "1004")],
          "submission_4": [("Edsger Dijkstra", "edsger@uni.edu", "1005")],
          "alice.ipynb": [("alice", "", "")]}


def test_a_group_submission_gives_one_gradebook_row_per_student_and_an_error_no_score(tmp_path):
    path = tmp_path / "scores-students.csv"
    build.write_gradebook(path, course_report.gradebook(ROWS, PEOPLE, POSSIBLE))
    with open(path, newline="") as f:  # as a gradebook import reads it: by email, one score column
        imported = list(csv.DictReader(f))
    assert list(imported[0]) == course_report.GRADEBOOK_COLUMNS
    by_email = {r["email"]: r for r in imported if r["email"]}
    assert [by_email[e]["score"] for e in ("ada@uni.edu", "alan@uni.edu")] == ["13", "13"]  # both members
    assert {by_email[e]["submission"] for e in ("ada@uni.edu", "alan@uni.edu")} == {"submission_1"}
    assert by_email["edsger@uni.edu"]["score"] == "" and by_email["edsger@uni.edu"]["status"] == "error"
    assert "no notebook" in by_email["edsger@uni.edu"]["reason"]
    assert by_email["grace@uni.edu"]["score"] == "6" and by_email["grace@uni.edu"]["status"] == "time limit"
    assert by_email["eve@uni.edu"]["name"].startswith("'="), "a name a spreadsheet would run as a formula"
    assert [r["name"] for r in imported if not r["email"]] == ["alice"]  # a flat folder: named by its file
    assert all(r["possible"] == f"{POSSIBLE:g}" for r in imported) and len(imported) == 6


def test_an_identity_on_two_rows_is_named():
    twice = {**PEOPLE, "alice.ipynb": [("Ada again", "ada@uni.edu", "")]}
    assert course_report.shared_identities(course_report.gradebook(ROWS, twice, POSSIBLE)) == ["ada@uni.edu"]
    assert course_report.shared_identities(course_report.gradebook(ROWS, PEOPLE, POSSIBLE)) == []


CHECKS = {"submission_1": {"q1a": {"test_srtio3": "passed"}, "q2a": {"test_values": "passed"}},
          "submission_2": {"q1a": {"test_srtio3": "passed"},
                           "q2a": {"test_values": "failed: got [[0.2873, 0.79]]: no self term v_i W_s + b"}},
          "submission_3": {"q1a": {"test_srtio3": "passed"}, "q2a": {"test_values": "passed"}},
          "alice.ipynb": {"q1a": {"test_srtio3": "passed"},
                          "q2a": {"test_values": "failed: got [[1.5, -2e-3]]: no self term v_i W_s + b",
                                  "<script>alert(1)</script>": "failed: <img src=x onerror=alert(2)>"}}}


def test_the_report_counts_each_check_and_groups_failures_by_kind():
    page = course_report.report_html(ROWS, CHECKS, POINTS, mae_full=0.09)
    text = re.sub(r"<[^>]+>", " ", page)
    assert "Course report: 5 submissions" in page and "3 graded, 1 time limit, 1 error" in page
    assert "Total: mean 7.0, median 6.5 of 13; 1 with full marks" in page  # totals 13, 7, 6, 2
    # q2a's test_values: passed by 2 of the 4 with marks, the same mistake with other numbers one kind
    assert re.search(r"q2a\s+test_values\s+2 \(50 %\)\s+2\s+0", text), text
    assert "2 &times; <code>got [[#, #]]: no self term v_i W_s + b</code>" in page
    # parts over the four with marks: q2a full marks 2 of 4, q4b mean (7 + 5 + 0 + 0) / 4
    assert re.search(r"q2a\s+4\s+2\.00\s+2 \(50 %\)\s+2 \(50 %\)", text), text
    assert re.search(r"q4b\s+7\s+3\.00\s+1 \(25 %\)", text), text
    # 4b's tiers at 0.09: one MAE in each band (0.05, 0.10, 0.5: none between 1.5 and 2 times)
    bands = re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td><td>(\d+)</td></tr>", page)
    assert bands == [("up to 0.090 eV/atom", "7", "1"), ("0.090 to 0.135", "5", "1"), ("0.135 to 0.180", "3", "0"),
                     ("above 0.180", "0", "1")]
    assert "3 of 4 submissions were scored" in page and "data:image/png;base64," in page
    assert "1 &times; <code>the cell starting &#x27;model, val_pred = None, {}&#x27; was stopped after # s" in page


def test_the_report_escapes_what_a_submission_wrote_and_runs_nothing():
    page = course_report.report_html(ROWS, CHECKS, POINTS, mae_full=0.09)
    assert "<script" not in page and "<img src=x" not in page and "<b>no notebook" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(#)&gt;" in page
    assert "default-src 'none'; img-src data:" in page  # no script, no request, whatever slipped through
    assert not re.search(r"(?:src|href)=\"(?!data:)", page)


def test_a_message_kind_keeps_the_words_and_hides_the_numbers():
    assert course_report.message_kind("got  [[0.5,\n-1e-3]] at 12 A") == "got [[#, #]] at # A"
    long = course_report.message_kind("x" * 1000)
    assert len(long) == course_report.MESSAGE_CHARS and long.endswith("…")
    assert math.isclose(float(course_report.NUMBER.fullmatch("-2.5e+3").group(0)), -2500.0, rel_tol=1e-12)
