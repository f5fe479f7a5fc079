"""``--engine ray``: the photo stages (detect, annotate's embedding, predict) on Ray Data.

The local engine (one process, the default) is unchanged; this package runs the same library
functions in Ray tasks and actors, so both engines give the same answers:

* :mod:`~facerec.distributed.cluster`: connecting to a Ray cluster or starting a local one, and
  the actor pool of a stage (one per GPU when there are GPUs);
* :mod:`~facerec.distributed.storage`: inputs and outputs as a local folder or any fsspec URL
  (``s3://``, ``gs://``); listing (Ray tasks, one per top-level folder) and reading;
* :mod:`~facerec.distributed.output`: an output folder of a Ray stage: its writer lock, the
  shards its actors write and their merge into the file the local engine writes;
* :mod:`~facerec.distributed.pipeline`: decoding (CPU tasks) and the pipeline of a stage;
* :mod:`~facerec.distributed.detect`, :mod:`~facerec.distributed.predict`,
  :mod:`~facerec.distributed.embed`: the three stages.

``ray`` is the optional extra ``facerec[ray]``; without it, ``--engine ray`` is one line naming
it. See docs/scaling-out.md.
"""
