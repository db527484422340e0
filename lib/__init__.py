"""Shared code of the study: the notebooks narrate and plot, these modules compute.

    config      the parameter schema (defaults, types, ranges) and its validation
    paths       where every artefact of a run lives
    sources     class folders, split manifests, the Grocery Store dataset
    audit       image checks, hashes, duplicates
    split       the one stratified split and the class weights
    pipeline    augmentation layers and the tf.data input pipelines
    plots       every figure
    provenance  seeds, versions, machine, git commit, manifest hash
    run         runs the notebooks in order (./run_all.sh)
"""
