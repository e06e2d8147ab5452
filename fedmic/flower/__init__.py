"""fedmic on Flower's deployment runtime (SuperLink + SuperNodes): one ServerApp (server_app.py)
and one ClientApp (client_app.py) drive the same Algorithm interface and the same round loop as
the engine, for every method. Needs the `flower` extra (`pip install -e ".[flower]"`); the rest of
fedmic never imports Flower. docs/deploy.md says how to run it."""
