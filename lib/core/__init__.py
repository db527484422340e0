"""The ground floor: what every stage stands on; it imports nothing from the floors above.

    config       the params schema (defaults, types, ranges) and its validation
    study        the study's models, one entry each (name, title, params section, notebook, recipe)
    minority     the minority-class methods (what each changes) and the metrics that choose between them
    overrides    params changed by dotted name (a notebook's overrides, ./run_all.sh --set)
    versions     the installed version of a package
    paths        where every artefact of a run (and of each evaluation round) lives
    step         one execution of a step (params, run folder, round, key), and its results: computed or read back
    backends     which Keras backend (TensorFlow, JAX, PyTorch) runs the study, and its determinism
    devices      the devices Keras' backend trains on; training over several of them
    distribution training across processes and hosts: coordinates, joining the run, each process's share of a batch
    provenance   seeds, versions, machine, git commit, manifest hash
    hardware     the machine a step computes on, seen without starting Keras (GPUs, CPU, the precision 'auto' means)
    store        state files written whole, locks with their holder, processes that end with their parent
    progress     what a step's kernel tells the runner while it works (epochs, images done, warnings)
    sweeps       a sweep of settings (--sweep NAME=V1,V2): every combination as overrides, named from its values
    tracking_store  the MLflow store runs are logged to: where, one writer at a time, retried when busy
"""
