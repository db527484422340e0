"""Using a finished run's models (read-only on the run).

    finished_run  a finished run's models, photos read as the study reads them, Keras and ONNX classifiers
    export        each first-round model as .keras, ONNX and a JSON description (python -m lib.deploy.export)
    predict       classify photos from the command line (./predict.sh)
    app           the web app: both models' answers with Grad-CAM (./app.sh; Streamlit page app/page.py)
    registry      exported models logged to their run in MLflow and registered in its model registry
"""
