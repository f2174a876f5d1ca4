"""``meshdream app``: a local web page that runs the pipeline (Gradio; ``pip install 'meshdream[app]'``).

runs.py  RUN folders of the app, the worker thread that calls meshdream.generate / export, progress, cancel
page.py  the Gradio page: prompt and settings, progress, 3D viewer, downloads, earlier runs
"""
