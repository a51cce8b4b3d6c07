"""`medvid serve`: a local web app that turns a prompt (or a class, or nothing) into a teaching video.

A form, a persistent job queue (SQLite in the gallery folder), live progress, and a gallery of
finished videos with their settings, judge scores and the evaluation report. FastAPI serves one
plain page with no external assets, so it works offline. See README.md, "Web app".
"""
