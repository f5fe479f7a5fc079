"""The recognition model, shared by the stages after detection: face embeddings
(:mod:`.embed`, dlib's network in torch in :mod:`.dlib_net`), the classifier and its calibration
(:mod:`.model`), the torch and onnxruntime runtimes with the one decision rule (:mod:`.runtime`)
and the ONNX export (:mod:`.export`)."""
