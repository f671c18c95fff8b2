"""Self-supervised methods on one engine (:mod:`mugs.engine`): one package per method, each with
its ``method`` config section (``config.py``) and its implementation of
:class:`mugs.methods.base.Method` (``method.py``); :mod:`mugs.methods.registry` maps
``method.name`` to both."""
