# Component image for the Kubeflow Pipelines v2 variant (`image-retrain kfp compile --image ...`) and for Beam
# workers on distributed runners (the TFX image is built on Beam's SDK image, whose /opt/apache/beam/boot entrypoint
# it keeps, so Dataflow's --sdk_container_image and Flink/Spark's DOCKER environment can run it too).
#
# Build from the repository root, after `make module` has converted the builtin image module into models/:
#   make module && docker build -t REGISTRY/image-retrain:TAG .
# The converted EfficientNet-Lite0 SavedModel is copied in rather than converted here: converting needs the PyTorch
# weights (the [convert] extra, >1 GB of torch) only for a few seconds, and copying keeps the image lean and the
# module byte-identical to the one the local runs used (its identity keys the embedding cache). To use another
# module, pass --module (a bucket URI of a SavedModel or a TF Hub handle) to `kfp compile`, or mount a volume at
# $IMAGE_RETRAIN_MODELS_DIR.
ARG TFX_IMAGE=tensorflow/tfx:1.21.0
FROM ${TFX_IMAGE}

WORKDIR /opt/image-retrain
COPY . /opt/image-retrain/

# requirements.lock is resolved for the project's Python (3.11); fail here, clearly, on an interpreter it does not fit.
RUN python -c "import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else \
    f'image-retrain needs Python 3.11 (requirements.lock); {sys.executable} is {v[0]}.{v[1]}: build with \
--build-arg TFX_IMAGE=<a TFX 1.21 image on Python 3.11>')"

# The project with the lock as constraints: packages the TFX image already has at the pinned versions are kept,
# the rest (kfp client, apscheduler, ...) is added at the versions the tests ran with. The [convert] extra (torch)
# is left out. Non-editable install plus PYTHONPATH: every dotted path the compiled pipeline names imports from the
# same files. The import check compiles a package and imports every module, executor, module function and artifact
# type it names (`kfp check-imports`), so an image that cannot run a step fails here, not in the cluster.
RUN python -m pip install --no-cache-dir -c requirements.lock . \
 && python -m pip install --no-cache-dir --no-deps -r requirements-overrides.txt \
 && cd /tmp && PYTHONPATH=/opt/image-retrain image-retrain kfp compile --output /tmp/check.yaml \
      --pipeline-root minio://mlpipeline/v2/artifacts --pvc image-retrain-models:/models --serving-dir /models \
      --data-dir /models/images --embedding-cache-dir /models/embedding_cache \
 && PYTHONPATH=/opt/image-retrain image-retrain kfp check-imports /tmp/check.yaml && rm /tmp/check.yaml

# TF Serving's TensorFlow (the release pipelines/configs.py declares), in a venv of its own: the load-and-query check
# before every push (components/serving_validator) loads each candidate with it, as that TF Serving would (~1.5 GB).
RUN release=$(sed -n 's/^TF_SERVING_RELEASE = "\([0-9.]*\)".*/\1/p' pipelines/configs.py) \
 && python -m venv /opt/serving-tf/$release \
 && /opt/serving-tf/$release/bin/python -m pip install --no-cache-dir "tensorflow-cpu==$release"

ENV PYTHONPATH=/opt/image-retrain \
    IMAGE_RETRAIN_MODELS_DIR=/opt/image-retrain/models \
    IMAGE_RETRAIN_SERVING_TF_DIR=/opt/serving-tf
