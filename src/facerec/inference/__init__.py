"""Using a trained model: ``facerec predict`` (:mod:`.predict`, videos in :mod:`.video`),
``evaluate`` (:mod:`.evaluate`), ``enroll``/``forget`` (:mod:`.enroll`) and ``verify``
(:mod:`.verify`)."""
