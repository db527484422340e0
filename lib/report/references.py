"""The works a run's report cites, numbered in its References section."""


REFERENCES = {
    "grocery": "M. Klasson, C. Zhang, H. Kjellström. <i>A Hierarchical Grocery Store Image Dataset with Visual and "
               "Semantic Labels.</i> IEEE Winter Conference on Applications of Computer Vision (WACV), 2019.",
    "mobilenet_v2_paper": "M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen. <i>MobileNetV2: Inverted Residuals and "
                          "Linear Bottlenecks.</i> CVPR, 2018.",
    "imagenet": "J. Deng, W. Dong, R. Socher, L.-J. Li, K. Li, L. Fei-Fei. <i>ImageNet: A Large-Scale Hierarchical "
                "Image Database.</i> CVPR, 2009.",
    "logit_adjustment": "A. K. Menon, S. Jayasumana, A. S. Rawat, H. Jain, A. Veit, S. Kumar. <i>Long-tail learning "
                        "via logit adjustment.</i> ICLR, 2021.",
    "mixup": "H. Zhang, M. Cisse, Y. N. Dauphin, D. Lopez-Paz. <i>mixup: Beyond Empirical Risk Minimization.</i> "
             "ICLR, 2018.",
    "grad_cam": "R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra. <i>Grad-CAM: Visual "
                "Explanations from Deep Networks via Gradient-based Localization.</i> ICCV, 2017.",
    "keras": "F. Chollet et al. <i>Keras.</i> https://keras.io, 2015–; <i>Transfer learning &amp; fine-tuning</i> guide.",
    "sklearn": "F. Pedregosa et al. <i>Scikit-learn: Machine Learning in Python.</i> JMLR 12, 2011.",
}
METHOD_REFERENCES = ("logit_adjustment", "mixup")  # cited only when the run compares that minority-class method


def references_html(params) -> str:
    """The works this run's report rests on, numbered: the dataset only when the run uses it, a minority-class
    method's paper only when the method was compared."""
    keys = [key for key in REFERENCES
            if (key != "grocery" or params.data.source == "grocery_store")
            and (key not in METHOD_REFERENCES or key in params.minority.methods)]
    return "<ol>" + "".join(f"<li>{REFERENCES[key]}</li>" for key in keys) + "</ol>"
