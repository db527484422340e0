"""The two models, trained on a round's split and evaluated on its test images.

    models            the CNN and MobileNetV2 builders, precision policy
    features          MobileNetV2 cut at its pooling layer: the one frozen-feature extractor
    train             one fit per phase, with the study's callbacks
    evaluate          predictions and metrics
    activation_cache  MobileNetV2's frozen layers run once; its phases train on their outputs
    experiment        the plumbing both recipes share: prepare, train per method, choose, evaluate, save
    recipes           both models' training recipes, side by side
    probe             a linear probe on MobileNetV2's frozen features: the floor fine-tuning should clear
    acquisition       which unlabelled photos to label next: margin and entropy scores, the labelling order
"""
