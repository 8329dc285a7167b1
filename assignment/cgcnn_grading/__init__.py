"""The autograder of the CGCNN assignment: each submission's notebook runs as a user of its own,
and every verdict is reached outside its kernel.

One concern per module:

    settings    the time limits, and the points, thresholds and check cells of grading.json
    sandbox     the grading user, file permissions, ending every process of that user
    execution   running the notebook cell by cell in the sandbox, with time limits and probes
    wire        what crosses from the kernel, read as data: messages capped, answers decoded strictly
    remote      stand-ins: the notebook's objects as the grading process uses them, through the kernel
    master_tests  the master notebook's tests (otter's test files), run here against the stand-ins,
                with expected values from the master's solution code
    heldout     part 4b's held-out crystals as graphs, and a trained model's MAE on them
    scoring     verdicts to points, part 4b's MAE tiers, results.json
    grade       one submission end to end; Gradescope's entry point (run_otter.py) calls `main`

The kernel side is the top-level module `cgcnn_kernel`, which is all the kernel imports of it.
"""
