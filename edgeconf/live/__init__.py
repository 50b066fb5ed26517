"""The live pipeline: frame sources, the demo scene, region proposers, the tracker, the pipeline that runs a
cascade on every tracked object, overlays, recording and event logs.

It builds on the cascade runtime (``edgeconf``) and ``edgeconf.devices``; the runtime never imports it.
Its command-line verbs (``run``, ``demo``) live in :mod:`edgeconf.live.cli`, mounted by the root CLI by name.
"""
