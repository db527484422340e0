"""The runner's parts, below `lib.run` which puts them together (``./run_all.sh``).

    steps        the study's steps: each notebook, the params it uses, the artefacts it reads; a run's plan
    keys         each step's key: its code, lib code, packages, backend, hardware, params, data and inputs, hashed
    execute      one step run by papermill in its own kernel, with its memory peak
    schedule     the steps in order or side by side (--jobs N): which are ready, each job's GPUs or CPU cores
    job          one step as a job: a request of plain values, run here or as `python -m lib.pipeline.job`
    interactive  a notebook opened by hand: reuse the published step, or compute into a scratch run
    store        the run store: the run's lock, staging, publish as one atomic switch, recovery after a kill
    progress     what a person watching a run sees: each step's progress, the time left, no start-up noise
    tracking     every run in MLflow: a parent run per run, a child per training, read from the run folder
    sweep        a sweep's runs one after another, each reusing the nearest finished run, then their page
"""
