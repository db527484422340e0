"""Raw images (read-only) to the splits and the batches the models train on.

    sources      class folders, split manifests, the Grocery Store dataset
    assets       offline copies of the downloads, seeded into Keras' cache
    images       reading an image file: upright RGB, first frame, resized
    audit        image checks, hashes, duplicate pairs, leaks per round, the audit's outputs
    groups       near-duplicate groups from pairs, and the group-aware split
    split        stratified splits, split manifests, class weights
    rounds       the evaluation rounds (which exist, which is first, each one's seed) and their splits
    pixels       decoding each image once, the pixel cache, a split's arrays
    augmentation the training images' random affine transforms, on the host (OpenCV)
    inputs       the training and validation batches (worker threads, a minority method's epoch order)
"""
