"""Shared code of the study: the notebooks narrate and plot, these modules compute.

Listed in the order data flows through them (raw images -> splits -> models -> comparison ->
report); each notebook imports what it shows from the module that computes it.

    config            the parameter schema (defaults, types, ranges) and its validation
    paths             where every artefact of a run (and of each evaluation round) lives
    rounds            the evaluation rounds (which exist, which is first, each one's seed) and their splits

  01 data audit
    sources           class folders, split manifests, the Grocery Store dataset
    audit             image checks, hashes, duplicates, near-duplicate groups, leaks per round
    groups            feature similarity, near-duplicate groups, the group-aware split
    split             stratified splits, split manifests, class weights

  02 CNN, 03 MobileNetV2
    images            reading an image file: upright RGB, first frame, resized
    inputs            decoding (cached), augmentation, the training and validation batches
    minority          the minority-class methods as objects (loss weights, epoch sampling, post-processing)
    models            the CNN and MobileNetV2 builders, precision policy
    devices           the devices Keras' backend trains on; training over several of them
    train             one fit per phase, with the study's callbacks
    recipes           both models' training recipes, side by side
    activation_cache  MobileNetV2's frozen layers run once; its phases train on their outputs
    experiment        the plumbing both recipes share: prepare, train per method, choose, evaluate, save
    evaluate          predictions and metrics
    probe             a linear probe on MobileNetV2's frozen features: the floor fine-tuning should clear, and the warning when it does not

  04 comparison, 05 report
    compare           both models side by side: every table and test, computed once, written, read back
    stats             bootstrap intervals, McNemar's test, metrics averaged over rounds
    calibration       calibration error, reliability bins, precision-recall curves
    explain           Grad-CAM maps (for any image), and the test images to show: examples, top losses, confusions
    report            the report's wording and rendering (HTML, PDF)
    plots             every figure

  the run
    run               runs the notebooks in order, reusing steps whose inputs are unchanged (./run_all.sh)
    schedule          steps side by side (--jobs N), each on its own GPUs or share of the cores
    backends          which Keras backend (TensorFlow, JAX, PyTorch) runs the study, and its determinism
    provenance        seeds, versions, machine, git commit, manifest hash
    assets            offline copies of the downloads

  using the trained models
    deploy            a finished run's models, photos read as the study reads them, Keras and ONNX classifiers
    export            each first-round model as .keras, ONNX and a JSON description (python -m lib.deploy.export)
    predict           classify photos from the command line (./predict.sh)
    app               the web app: both models' answers with Grad-CAM (./app.sh; Streamlit page app/page.py)
"""
