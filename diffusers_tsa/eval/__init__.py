"""Evaluation of text-to-video models on VideoPhy, VideoPhy2 and VBench, as in the TSA paper (Tables 1-3).

Every step is a command run as a module from the repository root:

- `python -m eval.prompt_files`: the benchmarks' published prompt files, checked against their SHA-256.
- `python -m eval.generate`: videos for a benchmark's prompts, with a manifest (`manifest.csv`).
- `python -m eval.videophy prepare|run|score`: VideoCon-Physics inputs, evaluator run, Table 1 scores.
- `python -m eval.videophy2 prepare|run|score`: VideoPhy2-AutoEval inputs, evaluator run, Table 2 scores.
- `python -m eval.vbench run|aggregate`: VBench in its own environment, Table 3 scores.
- `python -m eval.report`: several runs side by side in the layout of Tables 1-3.

The evaluators are 7B models with their own code and pinned dependencies: this package prepares their inputs,
runs them through a subprocess in the user's evaluator environment, parses their outputs strictly and aggregates.
"""
