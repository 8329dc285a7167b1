"""Gradescope's entry point (it replaces the one otter assign writes): grade /autograder/submission
with the isolated grader of `cgcnn_grading` and write /autograder/results/results.json, always.

    python run_otter.py [--user NAME [--lock-fd N]] [ROOT [PRIVATE...]]
        ROOT defaults to /autograder; PRIVATE are more paths the submission must not be able to read
        (local grading); NAME is the grading user (cgcnn-student-N for gradings run side by side) and
        N a descriptor of its lock that the caller holds already (build.py grade: waiting for a user
        is not part of the run's time)
"""

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", help="the grading user (default: cgcnn_grading.sandbox.USER)")
    parser.add_argument("--lock-fd", type=int, help="the grading user's lock, held by the caller")
    parser.add_argument("root", nargs="?", type=Path, default=Path("/autograder"))
    parser.add_argument("private", nargs="*", type=Path)
    args = parser.parse_args()
    try:
        from cgcnn_grading.grade import main
    except ImportError as err:  # the grading image lacks a package: say so instead of scoring nothing
        (args.root / "results").mkdir(parents=True, exist_ok=True)
        (args.root / "results" / "results.json").write_text(json.dumps({"score": 0, "output": (
            f"The autograder could not start ({err}): tell the course staff to check Gradescope's image "
            "build log.")}))
        sys.exit(0)
    sys.exit(main(args.root, args.private, *([args.user] if args.user else []), lock_fd=args.lock_fd))
