"""The project's benchmarks: speed, accuracy and resource figures, each run from the repository root
as `python -m benchmarks.NAME` (the repository's modules are installed with
`pip install --no-build-isolation -e .`; `build` is imported from the root).

    featurisation       CPU ms per crystal graph: the reference way, the project's, the graph cache
    training_step       CPU s per epoch: the solution's layers against the reference way's
    accuracy_for_time   test MAE for equal CPU time: the notebook's recipe against the reference recipe
    end_to_end          CPU time and memory of the solution notebook and of one grading run
    gradescope_limits   one grading run under Gradescope-like CPU and memory limits (cgroups)

Every figure is CPU time (time.process_time in-process, getrusage(RUSAGE_CHILDREN) differences for
subprocesses), with ratios against a baseline measured in the same process; none asserts a time.
`reference_way` (the reference CGCNN re-implemented) and `solution_code` (the solution, from the
master notebook) are what they compare, and tests/test_performance.py checks them without timing.
"""
