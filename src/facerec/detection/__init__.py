"""Stage 1, detection: the :class:`~facerec.detection.detect.Detector` registry with MTCNN
(:mod:`.mtcnn`, its networks in torch) as its entry, crop geometry (:mod:`.align`), and the
``facerec detect`` stage (:func:`~facerec.detection.detect.detect_folder`)."""
