"""Evaluation on the paper's seven benchmarks (Table 1): generate -> grade -> report, as separate steps.

Read in this order: benchmarks.py (data, hashes, prompts) -> harness.py (generation, resume, entry points
`evaluate`, `evaluate_problems`, `grade_file`) -> math_grader.py / paper_grader.py (strict and
paper math) -> code_grader.py + code_driver.py (HumanEval, HumanEval+, LiveCodeBench) -> sandbox.py +
sandbox_guard.py (untrusted code) -> report.py. Nothing heavy is imported here.
"""
