"""Shared code of the study: the notebooks narrate and show, these packages compute.

The packages are the floors of the study, bottom first; data flows up through them, and a
module imports only from its own floor or the floors below (tests/project/test_layout.py keeps it so).
Each package's ``__init__`` is its map, module by module.

    core        params schema and overrides, artefact paths, backends, devices, versions, provenance
    data        raw images (read-only) to splits and batches: sources, offline assets, image reading,
                the audit, near-duplicate groups, splits, evaluation rounds, the input streams
    training    the two models, MobileNetV2's frozen features, minority-class methods, training phases,
                evaluation, the activation cache, the experiment plumbing, both recipes, the linear probe,
                acquisition scores (which photos to label next)
    analysis    every round read back and compared: statistics, calibration, the comparison, the test
                images worth looking at, Grad-CAM
    report      figures, numbered tables, the report's prose, its references, rendering (HTML, PDF)
    deploy      a finished run's models: export, predict, the web app
    pipeline    the runner's parts: the steps and their keys, executing a step, a notebook opened by hand
    run         ./run_all.sh: validate, run or reuse each step in a staging folder, render, publish

Notebook by notebook: 01 data audit uses ``data`` (and ``training.features`` for near-duplicates);
02 CNN and 03 MobileNetV2 use ``training``; 04 comparison uses ``analysis``; 05 report uses
``report``; every notebook opens with `lib.pipeline.interactive.open_notebook`.
"""
