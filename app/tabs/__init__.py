"""The app's tabs, one module each (Gradio layout and events only).

Each ``build(...)`` lays out its tab inside the enclosing ``gr.Blocks`` and wires its events to
:mod:`app.handlers` / :mod:`app.train_handlers`, which do all the work and all the formatting;
a tab only routes view fields to components. :mod:`app.tabs.common` holds what they share.
"""
