"""Shared code of the study: the notebooks narrate and plot, these modules compute.

    config       the parameter schema (defaults, types, ranges) and its validation
    paths        where every artefact of a run (and of each evaluation round) lives
    sources      class folders, split manifests, the Grocery Store dataset
    audit        image checks, hashes, duplicates, near-duplicate groups, leaks per round
    groups       feature similarity, near-duplicate groups, the group-aware split
    split        stratified splits, split manifests, class weights
    rounds       evaluation rounds: repeated hold-out or k-fold, one split per round
    pipeline     decoding (cached), augmentation layers, the tf.data input pipelines
    minority     methods against class imbalance and their choice on validation
    models       the CNN and MobileNetV2, precision policy
    train        one fit per phase, with the study's callbacks
    transfer     MobileNetV2's two phases on cached activations of its frozen layers
    experiment   what a model notebook does: prepare, train per method, choose, evaluate, save
    evaluate     predictions and metrics
    calibration  calibration error, reliability bins, precision-recall curves
    stats        bootstrap intervals, McNemar's test, metrics averaged over rounds
    compare      both models side by side, one round or all rounds
    report       the report's wording and rendering (HTML, PDF)
    plots        every figure
    provenance   seeds, versions, machine, git commit, manifest hash
    assets       offline copies of the downloads
    run          runs the notebooks in order (./run_all.sh)
"""
