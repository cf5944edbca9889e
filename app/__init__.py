"""The Gradio app: location prior on an offline map, geo-aware photo classification,
image -> location, and a training tab that runs the bundled trainer in a separate process.

The app talks to the model only through :class:`csp.predictor.Predictor`; ``app.ui.build_app``
assembles the interface and ``app.cli.main`` (``python app.py``) starts it.
"""
