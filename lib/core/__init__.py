"""The ground floor: what every stage stands on; it imports nothing from the floors above.

    config       the params schema (defaults, types, ranges) and its validation
    minority     the minority-class methods (what each changes) and the metrics that choose between them
    overrides    params changed by dotted name (a notebook's overrides, ./run_all.sh --set)
    versions     the installed version of a package
    paths        where every artefact of a run (and of each evaluation round) lives
    backends     which Keras backend (TensorFlow, JAX, PyTorch) runs the study, and its determinism
    devices      the devices Keras' backend trains on; training over several of them
    distribution training across processes and hosts: coordinates, joining the run, each process's share of a batch
    provenance   seeds, versions, machine, git commit, manifest hash
    sweeps       a sweep of settings (--sweep NAME=V1,V2): every combination as overrides, named from its values
    tracking_store  the MLflow store runs are logged to: where, one writer at a time, retried when busy
"""
