"""The ground floor: what every stage stands on, importing nothing else of ``lib``'s.

    config       the params schema (defaults, types, ranges), its validation and overrides
    paths        where every artefact of a run (and of each evaluation round) lives
    backends     which Keras backend (TensorFlow, JAX, PyTorch) runs the study, and its determinism
    devices      the devices Keras' backend trains on; training over several of them
    distribution training across processes and hosts: coordinates, joining the run, each process's share of a batch
    provenance   seeds, versions, machine, git commit, manifest hash
"""
