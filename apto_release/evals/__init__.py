"""Evaluation results from raw judgements: ``apto-release eval summarize``.

``judgements`` reads and checks the per-item judgement files, ``metrics`` defines the benchmarks
and their metrics, ``stats`` the paired intervals and tests, ``agreement`` Krippendorff's alpha,
``summarize`` puts them together into the results file the model cards read, and ``chart``
draws it. Nothing heavy is imported here: NumPy comes with ``stats``, matplotlib with ``chart``.
"""
