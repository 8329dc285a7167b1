"""Gradescope's entry point (it replaces the one otter assign writes): grade /autograder/submission
with the isolated grader of `cgcnn_grading` and write /autograder/results/results.json, always.

    python run_otter.py [ROOT [PRIVATE...]]   ROOT defaults to /autograder; PRIVATE are more paths the
                                              submission must not be able to read (local grading)
"""

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/autograder")
    try:
        from cgcnn_grading.grade import main
    except ImportError as err:  # the grading image lacks a package: say so instead of scoring nothing
        (root / "results").mkdir(parents=True, exist_ok=True)
        (root / "results" / "results.json").write_text(json.dumps({"score": 0, "output": (
            f"The autograder could not start ({err}): tell the course staff to check Gradescope's image "
            "build log.")}))
        sys.exit(0)
    sys.exit(main(root, [Path(p) for p in sys.argv[2:]]))
