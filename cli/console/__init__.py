"""The web console: runs, logs, metrics, outputs, pipelines and machines in a browser.

A Starlette app (app.py) whose pages are one static shell reading the JSON API
(jsonapi.py), itself a thin view over the Python API. `conjure up` serves it on
http://127.0.0.1:8234; `conjure console` runs it in the foreground.
"""
