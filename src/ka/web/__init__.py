"""The web dashboard of `ka clone --web` and `ka web`: a live page, the history of past
deployments and a read-only JSON API (/api/v1/), fed by the events `ka clone` already produces.

`state` turns transport events into a model of the deployment (pure, no I/O); `history` reads
the stored reports; `access` decides who may read; `app` is the ASGI application and `server`
runs it in a thread of the golden process. Nothing here talks to the transport or the install:
it only listens.
"""
